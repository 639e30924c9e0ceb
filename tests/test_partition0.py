"""Partition 0 trained once (smsweep.trial.partition0): trials that share it (whatever their
searched masking keys) start at partition 1 from the cache and end with the weights they would
have had without it; a kill while an entry is written leaves nothing a later trial could read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smsweep import faults
from smsweep.engines.session import LocalSession
from smsweep.engines.trainloop import run_in_process
from smsweep.trial import partition0
from smsweep.trial.state import STATE_FILE
from tests.test_trial import tiny_spec

REPO = Path(__file__).resolve().parents[1]
IN_PROCESS = {"scoring_actors": 0, "train_workers": 0, "cpus_per_trial": 1}
ONE_DRAW = {"strategy": "random", "samples": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared machine a second one spins waiting for a busy core (a tiny
    trial took 20 s instead of 2); every comparison here is between runs of one thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def trained(spec, directory: Path, cache: Path | None) -> tuple[list[dict], dict]:
    """The reports and the final weights of a trial run in this process."""
    reports = [r.flat() for r in run_in_process(spec, directory, partition0_cache=cache)]
    final = LocalSession(directory).checkpoints()[-1]
    return reports, torch.load(final.path / STATE_FILE, weights_only=True)["model"]


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trials_sharing_partition0_train_it_once_and_end_as_without_the_cache(tmp_path):
    cache = tmp_path / "cache"
    selective = tiny_spec(resources=IN_PROCESS)
    random = tiny_spec(masking={"strategy": "random"}, resources=IN_PROCESS)
    first, _ = trained(selective, tmp_path / "selective", cache)
    assert "partition0_cache_hit" not in first[0] and len(entries(cache)) == 1
    second, weights = trained(random, tmp_path / "random", cache)
    assert second[0]["partition0_cache_hit"] == 1 and second[0]["partition0_saved_seconds"] > 0
    assert second[0]["recon_loss"] == first[0]["recon_loss"]  # the stored partition's loss
    assert second[-1]["cost/partition0_saved_seconds"] == second[0]["partition0_saved_seconds"]
    assert [r["partition"] for r in second if r["phase"] == "pretrain"] == [0, 1, 2]
    plain, without = trained(random, tmp_path / "plain", cache=None)
    assert same(weights, without), "a cache hit must end with the weights of a full run"
    assert plain[-1]["miou"] == second[-1]["miou"]
    assert plain[-1]["cost/partition0_saved_seconds"] == 0


def test_other_searched_masking_shares_the_warm_up_and_ends_as_without_the_cache(tmp_path):
    """Partition 0 masks with pretrain.warmup_masks, so a sweep over masking.ratio, patch_size
    and fill stores one entry per repeat seed."""
    cache = tmp_path / "cache"
    searched = {"strategy": "random", "ratio": 0.7, "patch_size": 4, "fill": "zero"}
    first, _ = trained(tiny_spec(masking=ONE_DRAW, resources=IN_PROCESS), tmp_path / "a", cache)
    other = tiny_spec(masking=searched, resources=IN_PROCESS)
    hit, weights = trained(other, tmp_path / "b", cache)
    assert hit[0]["partition0_cache_hit"] == 1 and len(entries(cache)) == 1
    assert hit[0]["recon_loss"] == first[0]["recon_loss"]
    plain, without = trained(other, tmp_path / "plain", cache=None)
    assert plain[0]["recon_loss"] == first[0]["recon_loss"]  # its own warm-up: the same one
    assert same(weights, without), "a shared warm-up must end with the weights of a full run"
    assert plain[-1]["miou"] == hit[-1]["miou"]


def test_a_kill_while_an_entry_is_written_leaves_no_entry(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "paused"
    script = (
        "import sys\n"
        "import torch\n"
        "from smsweep.engines.trainloop import run_in_process\n"
        "from tests.test_trial import tiny_spec\n"
        "from tests.test_partition0 import IN_PROCESS\n"
        "torch.set_num_threads(1)\n"
        "spec = tiny_spec(resources=IN_PROCESS)\n"
        "run_in_process(spec, sys.argv[1], partition0_cache=sys.argv[2])\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        faults.ENV: json.dumps({"pause_at": "partition0:store", "marker": str(marker)}),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "killed"), str(cache)],
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert child.poll() is None, "the trial ended before it stored partition 0"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert entries(cache) == []  # only the unfinished temporary folder
    again, _ = trained(tiny_spec(resources=IN_PROCESS), tmp_path / "again", cache)
    assert "partition0_cache_hit" not in again[0]
    [name] = entries(cache)
    assert partition0.load(cache, name) is not None
