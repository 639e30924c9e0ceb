"""`python -m smsweep cache list|prune STORAGE`: what the partition-0 cache holds, and pruning it
by last use; bad input exits 2 and writes nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from smsweep import cli
from smsweep.engines.settings import SETTINGS_FILE
from smsweep.trial import partition0

DAY = 86400


def entry(cache: Path, name: str, size: int, used_days_ago: float) -> Path:
    """A stand-in entry (the listing reads only files, sizes and times)."""
    folder = cache / name
    folder.mkdir(parents=True)
    (folder / partition0.STATE).write_bytes(b"x" * size)
    (folder / partition0.META).write_text("{}")
    when = time.time() - used_days_ago * DAY
    for path in (folder / partition0.STATE, folder):
        os.utime(path, (when, when))
    return folder


def test_list_shows_each_entry_with_size_age_and_last_use(tmp_path, capsys):
    cache = tmp_path / partition0.CACHE_DIR
    entry(cache, "a" * 32, 2_000_000, used_days_ago=3)
    entry(cache, "b" * 32, 1_000_000, used_days_ago=0.5)
    (cache / ".writing-x").mkdir()  # a write under way: not an entry
    assert cli.main(["cache", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 entries, 3.0 MB" in out
    lines = out.splitlines()
    assert lines[2].startswith("b" * 32) and "12.0 h" in lines[2]  # most recently used first
    assert lines[3].startswith("a" * 32) and "2.0 MB" in lines[3] and "3.0 d" in lines[3]


def test_prune_keeps_what_was_used_recently(tmp_path, capsys):
    cache = tmp_path / partition0.CACHE_DIR
    entry(cache, "old", 10, used_days_ago=9)
    entry(cache, "new", 10, used_days_ago=1)
    stale = cache / ".writing-stale"
    stale.mkdir()
    os.utime(stale, (time.time() - 9 * DAY,) * 2)
    assert cli.main(["cache", "prune", str(tmp_path), "--keep-days", "7"]) == 0
    assert "pruned 1 entry" in capsys.readouterr().out
    assert sorted(p.name for p in cache.iterdir()) == ["new"]
    assert cli.main(["cache", "prune", str(cache), "--all"]) == 0  # the cache folder itself
    assert list(cache.iterdir()) == []


def test_a_hit_marks_its_entry_used(tmp_path):
    state = {"model": {"w": torch.zeros(2)}, "optimizer": {}, "torch_rng": torch.get_rng_state()}
    assert partition0.store(tmp_path, "e", partition0.Entry(state, {"recon_loss": 0.5}, 1.0))
    long_ago = time.time() - 5 * DAY
    os.utime(tmp_path / "e", (long_ago, long_ago))
    assert partition0.load(tmp_path, "e") is not None
    assert time.time() - (tmp_path / "e").stat().st_mtime < 600
    assert partition0.prune(tmp_path, 4 * DAY, time.time()) == []


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.main(["cache", "list", str(missing)]) == 2
    assert "is not a directory" in capsys.readouterr().err and not missing.exists()
    experiment = tmp_path / "sweep"
    experiment.mkdir()
    (experiment / SETTINGS_FILE).write_text("{}")
    assert cli.main(["cache", "prune", str(experiment), "--all"]) == 2
    assert f"give {tmp_path.resolve()}" in capsys.readouterr().err
    assert cli.main(["cache", "list", "s3://bucket/runs"]) == 2
    for options in ([], ["--keep-days", "-1"], ["--keep-days", "2", "--all"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(["cache", "prune", str(tmp_path), *options])
        assert stop.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
