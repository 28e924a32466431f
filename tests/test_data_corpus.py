"""Corpus reading and validation; named datasets read from --data-dir; plain folders."""

from __future__ import annotations

import gzip

import pytest

from hat_ray.data.corpus import moses_unescape, read_lines, read_parallel
from hat_ray.data.datasets import load_split
from hat_ray.errors import DataError


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip(tmp_path, gz):
    p = write(tmp_path / ("a.en.gz" if gz else "a.en"), "Hello  world \nZwei Männer\u2028 gehen\n".encode(), gz)
    assert read_lines(p) == ["Hello  world", "Zwei Männer\u2028 gehen"]  # U+2028 does not split a line


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n \n", "is empty"),
    (b"ok\nbad \xff\xfe here\n", "line 2, byte 5: not UTF-8"),
    (b"ok\nok\nnul\x00\n", "line 3: NUL byte"),
    (b"ok\n" + b"x" * 20001 + b"\n", "line 2: 20001 characters"),
])
def test_bad_files_name_file_and_line(tmp_path, content, message):
    p = write(tmp_path / "bad.de", content)
    with pytest.raises(DataError, match=message) as err:
        read_lines(p)
    assert str(p) in str(err.value)


def test_broken_gzip_and_missing_file(tmp_path):
    p = write(tmp_path / "x.en.gz", gzip.compress(b"a\n" * 1000)[:-20])
    with pytest.raises(DataError, match="corrupted or truncated gzip"):
        read_lines(p)
    with pytest.raises(DataError, match="is named .gz but is not gzip"):
        read_lines(write(tmp_path / "y.en.gz", b"plain\n"))
    with pytest.raises(DataError, match="does not exist"):
        read_lines(tmp_path / "nope.en")


def test_unequal_line_counts(tmp_path):
    src = write(tmp_path / "t.en", b"a\nb\nc\n")
    tgt = write(tmp_path / "t.de", b"a\nb\n")
    with pytest.raises(DataError, match=r"t.en has 3 lines but .*t.de has 2"):
        read_parallel(src, tgt, "en", "de")


def test_moses_unescape_and_empty_pairs(tmp_path):
    assert moses_unescape("it &apos;s &quot;x&quot; &amp;lt;") == "it 's \"x\" &lt;"
    c = read_parallel(write(tmp_path / "a.x", b"a\n\nc\n"), write(tmp_path / "a.y", b"A\nB\nC\n"), "x", "y")
    assert len(c) == 3 and c.without_empty().src == ("a", "c")


def test_multi30k_from_data_dir(shared_data):
    folder = shared_data / "multi30k"
    valid = load_split("multi30k", "valid", folder)
    test = load_split("multi30k", "test", folder)
    assert (len(valid), len(test)) == (1014, 1000)
    assert valid.src[0] == "A group of men are loading cotton onto a truck"
    assert test.tgt[0] == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    assert (test.src_lang, test.tgt_lang) == ("en", "de")



def test_multi30k_untouched_test_sets(shared_data):
    """test2017 flickr / mscoco and test2018 flickr: the test sets nobody tuned on (issue 20), read
    by name; the download list fetches them with the checksums of these very files."""
    import hashlib

    from hat_ray.data.datasets import splits_of
    from hat_ray.data.download import SOURCES
    from hat_ray.errors import DataError

    folder = shared_data / "multi30k"
    sizes = {s: len(load_split("multi30k", s, folder)) for s in ("test2017_flickr", "test2017_mscoco", "test2018_flickr")}
    assert sizes == {"test2017_flickr": 1000, "test2017_mscoco": 461, "test2018_flickr": 1071}
    assert splits_of("multi30k")[:3] == ("train", "valid", "test") and splits_of("synthetic") == ("train", "valid", "test")
    sources = {s.file: s.sha256 for s in SOURCES["multi30k"]}
    for stem in ("test_2017_flickr", "test_2017_mscoco", "test_2018_flickr"):
        for lang in ("en", "de"):
            path = folder / f"{stem}.{lang}.gz"
            assert sources[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="unknown split 'test2017_flickr': use one of train, valid, test$"):
        load_split("synthetic", "test2017_flickr")


def test_wmt14_and_iwslt_from_shared_folders(shared_data):
    test = load_split("wmt14_en_de", "test", shared_data / "wmt14_en_de_newstest2014")
    assert len(test) == 3003 and test.src[0] == "Gutach: Increased safety for pedestrians"
    with pytest.raises(DataError, match="no train split"):
        load_split("wmt14_en_de", "train", shared_data / "wmt14_en_de_newstest2014")
    valid = load_split("iwslt14_de_en", "valid", shared_data / "iwslt14_de_en")
    assert len(valid) == 7283 and valid.src[0] == "es ist diese pyramide ." and valid.tgt[0] == "it 's that pyramid ."
    seg = load_split("iwslt14_de_en", "valid", shared_data / "iwslt14_de_en", segmented=True)
    assert seg.src[0] == "es ist diese pyrami@@ de ."


def test_plain_folder_and_errors(tmp_path):
    for split in ("train", "valid"):
        write(tmp_path / f"{split}.src", b"a b\nc d\n")
        write(tmp_path / f"{split}.tgt", b"A B\nC D\n", gz=False)
    c = load_split(str(tmp_path), "valid")
    assert c.src == ("a b", "c d") and (c.src_lang, c.tgt_lang) == ("src", "tgt")
    with pytest.raises(DataError, match="no test split"):
        load_split(str(tmp_path), "test")
    with pytest.raises(DataError, match="not a dataset name"):
        load_split(str(tmp_path / "missing"), "train")
    with pytest.raises(DataError, match="--data-dir .* does not exist"):
        load_split("multi30k", "train", tmp_path / "missing")
    write(tmp_path / "test.src", b"x\n")
    with pytest.raises(DataError, match="has test.src but not test.tgt"):
        load_split(str(tmp_path), "test")
