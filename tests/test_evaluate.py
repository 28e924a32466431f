"""`hat-ray evaluate` on a tiny trained model: BLEU > 0 with a signature, beam / greedy,
checkpoint averaging; BLEU helpers."""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml
from tiny_space import tiny_space_dict

from hat_ray.cli.main import main
from hat_ray.space import SearchSpace
from hat_ray.train.evaluate import sacre_bleu, split_compounds, tokenized_bleu

TINY = tiny_space_dict(dropout=0.0)


def copy_corpus(folder, seed=0):
    """A task a 32-dim model learns in a few hundred updates: copy 3-7 words of 24."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", 3000), ("valid", 60), ("test", 60)):
        lines = [" ".join(f"w{rng.randrange(24)}" for _ in range(rng.randint(3, 7))) for _ in range(n)]
        for side in ("src", "tgt"):
            (folder / f"{split}.{side}").write_text("".join(line + "\n" for line in lines))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (root / "arch.yaml").write_text(yaml.safe_dump(SearchSpace.from_dict(TINY).largest().to_dict()))
    data = copy_corpus(root / "data")
    code = main(["train", "subnet", "--arch", str(root / "arch.yaml"), "--space", str(root / "tiny.yaml"),
                 "--data", str(data), "--out", str(root / "run"), "--max-updates", "300", "--schedule", "constant",
                 "--lr", "2e-3", "--warmup-updates", "20", "--vocab-size", "400", "--max-tokens", "800",
                 "--save-every", "100", "--keep-last", "3", "--validate-every", "0", "--threads", "1",
                 "--no-tensorboard", "--no-progress"])
    assert code == 0
    return root


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_tiny_model_gives_bleu_and_signature(trained, capsys):
    ckpt = str(trained / "run" / "checkpoint_last.pt")
    code, out, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--split", "test", "--beam", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert list(result) == ["sacrebleu", "signature", "tok_bleu", "valid_loss"]
    assert result["sacrebleu"] > 20.0 and result["tok_bleu"] > 20.0
    assert result["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert 0 < result["valid_loss"] < math.log2(400)
    code, out, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--beam", "3", "--lenpen", "1.0", "--json")
    beam = json.loads(out)
    assert code == 0 and beam["valid_loss"] == pytest.approx(result["valid_loss"]) and beam["sacrebleu"] >= 0


def test_beam_search_is_at_least_as_good_as_greedy(trained, capsys):
    ckpt = str(trained / "run" / "checkpoint_last.pt")
    scores = {}
    for beam in ("1", "3"):
        code, out, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--beam", beam, "--lenpen", "1.0", "--json")
        scores[beam] = json.loads(out)["sacrebleu"]
    assert scores["3"] > 0.8 * scores["1"]


def test_greedy_average_and_hypotheses_file(trained, capsys):
    ckpt = str(trained / "run" / "checkpoint_last.pt")
    hyp = trained / "hyp.txt"
    code, out, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--split", "valid", "--beam", "1",
                         "--average-last", "3", "--limit", "20", "--output", str(hyp))
    assert code == 0, err
    assert "SacreBLEU" in out and "tokenized BLEU" in out
    assert len(hyp.read_text().splitlines()) == 20
    runs = sorted(p.name for p in (trained / "run").glob("checkpoint_u*.pt"))
    assert runs == ["checkpoint_u0000100.pt", "checkpoint_u0000200.pt", "checkpoint_u0000300.pt"]


def test_evaluate_errors_are_one_line(trained, capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(bad), "--json")
    assert code == 2 and err.count("\n") == 1 and "corrupted" in err
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(trained / "run" / "checkpoint_last.pt"),
                       "--data", "multi30k", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(trained / "run" / "checkpoint_last.pt"),
                       "--split", "test2017_flickr")  # a Multi30k test set; this model's data is a folder
    assert code == 2 and err.count("\n") == 1 and "unknown split 'test2017_flickr': use one of train, valid, test" in err


def test_multi30k_untouched_test_set_through_the_cli(trained, shared_data, capsys):
    """`--split test2017_mscoco` scores a checkpoint on Multi30k's test set nobody tuned on (the
    tiny model knows none of its words: only the wiring is checked)."""
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(trained / "run" / "checkpoint_last.pt"), "--data",
                         "multi30k", "--data-dir", str(shared_data / "multi30k"), "--split", "test2017_mscoco",
                         "--beam", "1", "--limit", "5")
    assert code == 0, err
    assert "(test2017_mscoco, 5 sentences)" in out


def test_bleu_helpers():
    assert split_compounds("Baden-Württemberg und 3-4 - x") == "Baden ##AT##-##AT## Württemberg und 3 ##AT##-##AT## 4 - x"
    refs = ["Die Katze sitzt auf der Matte.", "Ein Ost-West-Konflikt."]
    assert sacre_bleu(refs, refs)[0] == pytest.approx(100.0)
    assert tokenized_bleu(refs, refs) == pytest.approx(100.0)
    assert tokenized_bleu(["Ein Ost-West Konflikt."], refs[1:]) < 100.0


def test_fairseq_dictionary_checkpoint_reads_segmented_files(shared_data, capsys, tmp_path):
    """An imported HAT checkpoint carries fairseq dictionaries, not a subword model: evaluation
    reads the pre-segmented (BPE) files and scores against de-segmented references."""
    from hat_ray.checkpoint import make_checkpoint, save_checkpoint
    from hat_ray.data.datasets import load_split
    from hat_ray.model.transformer import build_super

    seg = load_split("iwslt14_de_en", "valid", shared_data / "iwslt14_de_en", segmented=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {side: specials + sorted({t for line in lines[:50] for t in line.split()})
             for side, lines in (("src", seg.src), ("tgt", seg.tgt))}
    space = SearchSpace.from_dict({**TINY, "super": {**TINY["super"], "share_embeddings": False}})
    model = build_super(space, len(vocab["src"]), len(vocab["tgt"]), seed=0)
    save_checkpoint(tmp_path / "hat.pt", make_checkpoint(model, space, vocab=vocab))
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "hat.pt"), "--data", "iwslt14_de_en",
                         "--data-dir", str(shared_data / "iwslt14_de_en"), "--split", "valid", "--limit", "8",
                         "--beam", "1", "--json", "--output", str(tmp_path / "hyp.txt"))
    assert code == 0, err
    result = json.loads(out)
    assert result["valid_loss"] > 0 and result["signature"].startswith("nrefs:1")
    assert "@@" not in (tmp_path / "hyp.txt").read_text()
