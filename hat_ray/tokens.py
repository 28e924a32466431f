"""Special token ids, fairseq dictionary layout: <s>=0 <pad>=1 </s>=2 <unk>=3.

Shared by the data pipeline, the model and decoding; deliberately imports nothing."""

PAD, BOS, EOS, UNK = 1, 0, 2, 3
