"""`ablate clean`: what failed builds of keys the spec no longer plans left, listed with sizes, deleted on --yes."""

from __future__ import annotations

import json
import os

import pytest

from framework.cli import main
from framework.errors import RetryLater
from framework.spec import load_spec
from framework.sweep.execute import open_store
from framework.sweep.plan import build_plan


def test_clean_lists_then_deletes_the_leftovers_of_keys_out_of_the_plan(minimal, write_spec, in_tmp, capsys):
    path = write_spec(minimal)
    loaded = load_spec(path)
    (planned,) = build_plan(loaded.spec, loaded.path).by_stage("pool")
    store = open_store(loaded)
    for key in (planned.key, "0ld0ld0ld0ld0ld0"):  # the second: a pool of the spec before an edit
        with pytest.raises(ValueError), store.build("pool", key) as b:
            (b.dir / "partial.bin").write_bytes(b"x" * 3000)
            raise ValueError("the build failed")
    gone = [store.work_path("pool", "0ld0ld0ld0ld0ld0"), store.root / "pool" / "0ld0ld0ld0ld0ld0.failed.json"]

    assert main(["clean", str(path)]) == 0
    out = capsys.readouterr().out
    assert all(f"would remove  {p}  (" in out for p in gone) and planned.key not in out
    assert "would remove 2 leftover(s) of keys not in the plan of mini: 3." in out and "KiB" in out
    assert all(p.exists() for p in gone)

    assert main(["clean", str(path), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 leftover(s)" in out and not any(p.exists() for p in gone)
    assert store.work_path("pool", planned.key).exists()  # the planned key's build resumes from it
    assert main(["clean", str(path)]) == 0 and "would remove 0 leftover(s)" in capsys.readouterr().out


def _failed_unplanned_key(store, key: str = "0ld0ld0ld0ld0ld0"):
    with pytest.raises(ValueError), store.build("pool", key) as b:
        (b.dir / "partial.bin").write_bytes(b"x" * 3000)
        raise ValueError("the build failed")
    return store.work_path("pool", key)


def test_clean_yes_is_refused_while_a_run_of_the_sweep_goes(minimal, write_spec, in_tmp, capsys):
    """A run's stage job writes its log before it takes the key's lock (it loads the spec first), and a run of
    another spec of the same name may be building a key this plan lacks: nothing is deleted while a run goes."""
    from launchers.local import register_run

    path = write_spec(minimal)
    store = open_store(load_spec(path))
    work = _failed_unplanned_key(store)
    record = register_run(store, "other-spec.yaml")  # this very process: a live local run of the sweep
    try:
        assert main(["clean", str(path), "--yes"]) == 2
        err = capsys.readouterr().err
        assert f"a local run of this sweep is going (pid {os.getpid()}, other-spec.yaml" in err
        assert "Traceback" not in err and work.exists()
        assert main(["clean", str(path), "--yes", "--force"]) == 2 and work.exists()  # a live run is never forced
        assert main(["clean", str(path)]) == 0 and f"would remove  {work}" in capsys.readouterr().out  # dry run
    finally:
        record.unlink()
    assert main(["clean", str(path), "--yes"]) == 0 and not work.exists()


def test_a_run_recorded_by_another_host_needs_force(minimal, write_spec, in_tmp, capsys):
    path = write_spec(minimal)
    store = open_store(load_spec(path))
    work = _failed_unplanned_key(store)
    runs = store.root / ".runs"
    runs.mkdir()
    (runs / "elsewhere.4242.json").write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": "T"}))
    assert main(["clean", str(path), "--yes"]) == 2 and work.exists()
    assert "on host elsewhere (pid 4242, since T)" in capsys.readouterr().err
    assert main(["clean", str(path), "--yes", "--force"]) == 0 and not work.exists()


def test_clean_keeps_a_deferred_builds_checkpoint_and_a_slurm_keys_leftovers_unless_forced(
    minimal, write_spec, in_tmp, capsys
):
    path = write_spec(minimal)
    store = open_store(load_spec(path))
    with pytest.raises(RetryLater), store.build("train", "def3rred") as b:  # USR1 before a Slurm time limit
        (b.dir / "checkpoint.bin").write_bytes(b"x" * 100)
        raise RetryLater("stopped at a checkpoint")
    queued = _failed_unplanned_key(store, "qu3u3d")
    record = store.root / "pool" / "qu3u3d.slurm.json"
    record.write_text(json.dumps({"job_id": 7, "stage": "pool", "keys": ["qu3u3d"]}))

    for argv in (["clean", str(path)], ["clean", str(path), "--yes"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "kept    train/def3rred: deferred" in out and "kept    pool/qu3u3d: a Slurm job" in out
        assert "0 leftover(s)" in out
    assert (store.work_path("train", "def3rred") / "checkpoint.bin").is_file() and queued.exists()

    assert main(["clean", str(path), "--yes", "--force"]) == 0
    assert "removed 5 leftover(s)" in capsys.readouterr().out  # two work dirs and failure records; the record
    assert not store.work_path("train", "def3rred").exists() and not queued.exists() and not record.exists()


def test_disk_usage_survives_files_vanishing_during_the_walk(tmp_path, monkeypatch):
    """A build's temporaries may go between the listing and the size look-up: they count as nothing."""
    import pathlib

    from framework.cli import _disk_usage

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("a", "b", "sub/c"):
        (tmp_path / "d" / name).write_bytes(b"x" * 10)
    assert _disk_usage(tmp_path / "d") >= 30
    is_file = pathlib.Path.is_file

    def vanishing(self):  # true when asked, then gone: as if deleted right after
        found = is_file(self)
        if found and self.name in ("a", "c"):
            self.unlink()
        return found

    monkeypatch.setattr(pathlib.Path, "is_file", vanishing)
    assert _disk_usage(tmp_path / "d") == 10
    assert _disk_usage(tmp_path / "gone") == 0
