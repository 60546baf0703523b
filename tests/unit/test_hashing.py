"""Content keys of files and directories: what must change a key, and the digest cache that makes it cheap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framework import hashing
from framework.hashing import content_key, file_digest, tree_digest


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "_FILE_CACHE", {})
    return tmp_path / "cache" / "digests"


def _model_dir(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 64}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_same_config_and_shard_size_but_other_weights_is_another_model(tmp_path: Path) -> None:
    size = 3 << 20  # larger than any "small file" shortcut would hash
    a = _model_dir(tmp_path / "a", os.urandom(size))
    b = _model_dir(tmp_path / "b", os.urandom(size))
    same = _model_dir(tmp_path / "c", (a / "model.safetensors").read_bytes())
    assert tree_digest(a) != tree_digest(b)
    assert tree_digest(a) == tree_digest(same)


def test_weights_rewritten_in_place_change_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_SETTLED_S", -1.0)  # remember digests of files just written
    d = _model_dir(tmp_path / "m", b"\0" * 4096)
    shard = d / "model.safetensors"
    before = tree_digest(d)
    st = shard.stat()
    hashing._FILE_CACHE.clear()  # a later process: only the disk cache remains
    shard.write_bytes(b"\1" * 4096)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only ctime tells
    assert tree_digest(d) != before


def test_a_file_changed_just_now_is_not_remembered_on_disk(tmp_path: Path, cache_dir: Path) -> None:
    """Within one timestamp tick of a coarse clock, a rewrite could keep its stat: wait until it settles."""
    f = tmp_path / "w.bin"
    f.write_bytes(b"fresh")
    file_digest(f)
    assert not cache_dir.exists() or not [p for p in cache_dir.iterdir() if not p.name.endswith(".lock")]


def test_digest_is_read_back_from_the_disk_cache(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(hashing, "_SETTLED_S", -1.0)
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    real = file_digest(f)
    (entry,) = [p for p in cache_dir.iterdir() if not p.name.endswith(".lock")]
    assert entry.read_text() == real
    entry.write_text("f" * 64)  # what a later process finds there is what it uses, without reading the file
    hashing._FILE_CACHE.clear()
    assert file_digest(f) == "f" * 64


def test_unwritable_cache_only_costs_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(blocker))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_digest(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_hidden_files_do_not_count(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m", b"w")
    before = tree_digest(d)
    (d / ".cache").mkdir()
    (d / ".cache" / "lock").write_text("x")
    assert tree_digest(d) == before


def test_content_key_ignores_dict_order() -> None:
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
