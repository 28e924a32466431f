"""Download-and-cache code, exercised without network through file:// URLs and small archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest

from hat_ray.data import download
from hat_ray.data.datasets import load_split
from hat_ray.errors import DataError


def _gz_lines(lines: list[str]) -> bytes:
    return gzip.compress("".join(line + "\n" for line in lines).encode())


@pytest.fixture
def fake_multi30k(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    remote.mkdir()
    sources = []
    for stem, n in (("train", 5), ("val", 2), ("test_2016_flickr", 3)):
        for lang in ("en", "de"):
            data = _gz_lines([f"{stem} {lang} {i}" for i in range(n)])
            (remote / f"{stem}.{lang}.gz").write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            sources.append(download.Source((remote / f"{stem}.{lang}.gz").as_uri(), f"{stem}.{lang}.gz", sha))
    monkeypatch.setitem(download.SOURCES, "multi30k", sources)
    monkeypatch.setenv("HAT_RAY_DATA", str(tmp_path / "cache"))
    return remote


def test_first_use_downloads_into_cache_then_reads_offline(fake_multi30k, tmp_path):
    test = load_split("multi30k", "test")
    assert test.src == ("test_2016_flickr en 0", "test_2016_flickr en 1", "test_2016_flickr en 2")
    folder = tmp_path / "cache" / "multi30k"
    assert (folder / download.MARKER).is_file() and (folder / "train.de.gz").is_file()
    assert not (tmp_path / "cache" / ".multi30k.partial").exists()
    for path in fake_multi30k.iterdir():  # the "network" is gone: the cache is enough
        path.unlink()
    assert len(load_split("multi30k", "train")) == 5


def test_checksum_mismatch_and_unreachable_source(fake_multi30k, monkeypatch):
    bad = [download.Source(s.url, s.file, "0" * 64) for s in download.SOURCES["multi30k"]]
    monkeypatch.setitem(download.SOURCES, "multi30k", bad)
    with pytest.raises(DataError, match="expected sha256"):
        load_split("multi30k", "valid")
    gone = [download.Source(fake_multi30k.as_uri() + "/missing.gz", "m.gz")]
    monkeypatch.setitem(download.SOURCES, "multi30k", gone)
    with pytest.raises(DataError, match="cannot download .*--data-dir"):
        load_split("multi30k", "valid")
    with pytest.raises(DataError, match="only http"):
        download.download_file("ftp://example/x", fake_multi30k / "x")


def test_incomplete_cache_folder_is_never_deleted(fake_multi30k, tmp_path):
    folder = tmp_path / "cache" / "multi30k"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("user file")
    with pytest.raises(DataError, match="exists but is incomplete"):
        load_split("multi30k", "valid")
    assert (folder / "mine.txt").read_text() == "user file"


def _tgz(path, members: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_iwslt14_preparation(tmp_path, monkeypatch):
    train_de = ["<url>http://x</url>", "<talkid>1</talkid>"] + [f"satz {i}" for i in range(46)] + ["<title>Titel</title>"]
    train_en = ["<url>http://x</url>", "<talkid>1</talkid>"] + [f"sentence {i}" for i in range(46)] + ["<title>Title</title>"]
    members = {"de-en/train.tags.de-en.de": "\n".join(train_de) + "\n",
               "de-en/train.tags.de-en.en": "\n".join(train_en) + "\n"}
    for k, name in enumerate(download.IWSLT_TEST_SETS):
        for lang in ("de", "en"):
            members[f"de-en/{name}.de-en.{lang}.xml"] = (
                f'<doc>\n<seg id="1"> {name} {lang} it\u2019s </seg>\n<seg id="2">{k} {lang}</seg>\n</doc>\n')
    _tgz(tmp_path / "de-en.tgz", members)
    monkeypatch.setitem(download.SOURCES, "iwslt14_de_en", [download.Source((tmp_path / "de-en.tgz").as_uri(), "de-en.tgz")])
    monkeypatch.setenv("HAT_RAY_DATA", str(tmp_path / "cache"))
    train, valid = load_split("iwslt14_de_en", "train"), load_split("iwslt14_de_en", "valid")
    assert len(valid) == 2 and valid.src == ("satz 22", "satz 45")  # every 23rd pair
    assert len(train) == 45 and train.tgt[-1] == "Title" and "satz 22" not in train.src
    test = load_split("iwslt14_de_en", "test")
    assert len(test) == 10 and test.src[0] == "IWSLT14.TED.dev2010 de it's" and test.tgt[1] == "0 en"


def test_wmt14_preparation(tmp_path, monkeypatch):
    long = " ".join(["w"] * 300)
    _tgz(tmp_path / "e.tgz", {"training/europarl-v7.de-en.en": "a\n\nc\n", "training/europarl-v7.de-en.de": "A\nB\nC\n"})
    _tgz(tmp_path / "c.tgz", {"commoncrawl.de-en.en": f"d\n{long}\n", "commoncrawl.de-en.de": "D\nE\n"})
    _tgz(tmp_path / "n.tgz", {"training/news-commentary-v12.de-en.en": "f\n", "training/news-commentary-v12.de-en.de": "F\n"})
    _tgz(tmp_path / "d.tgz", {"dev/newstest2013.en": "v\n", "dev/newstest2013.de": "V\n"})
    sgm = '<srcset>\n<doc>\n<seg id="1">Gutach: x</seg>\n<seg id="2"> y </seg>\n</doc>\n'
    _tgz(tmp_path / "t.tgz", {"test-full/newstest2014-deen-src.en.sgm": sgm,
                              "test-full/newstest2014-deen-ref.de.sgm": sgm.replace("x", "X")})
    srcs = [download.Source((tmp_path / f"{n}.tgz").as_uri(), f"{n}.tgz") for n in "ecndt"]
    monkeypatch.setitem(download.SOURCES, "wmt14_en_de", srcs)
    monkeypatch.setenv("HAT_RAY_DATA", str(tmp_path / "cache"))
    train = load_split("wmt14_en_de", "train")
    assert train.src == ("a", "c", "d", "f") and train.tgt == ("A", "C", "D", "F")  # empty and >250 words dropped
    assert load_split("wmt14_en_de", "test").tgt == ("Gutach: X", "y")
    assert load_split("wmt14_en_de", "valid").src == ("v",)
