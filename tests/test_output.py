"""What a user sees: progress through every phase of a trial with the time left, the engines'
own log lines only with --verbose, words for statuses, `resume` of a finished sweep, and what a
sweep leaves on disk."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from smsweep.cli import build_parser, main
from smsweep.trial.state import STATE_FILE
from tests.test_sweep import REPO, tiny_sweep, write_spec

ENGINE_LINE = re.compile(r"\b(INFO|WARNING)\b")


def _spec(tmp_path, num_samples: int = 2):
    spec = tiny_sweep(num_samples=num_samples)
    spec["search"]["space"] = {"masking.strategy": {"choice": ["selective", "random"]}}
    spec["resources"] |= {"train_workers": 0, "cpus_per_trial": 1}
    return write_spec(tmp_path, spec)


def _files(root) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.slow
def test_progress_quiet_engines_statuses_resume_of_a_finished_sweep_and_checkpoints(
    finished_sweep, monkeypatch, capfd
):
    """What `run` printed at the default verbosity, what the finished trials kept, and `resume`
    of the finished sweep: the session's tiny sweep (tests/conftest.py; 3 trials, one of them
    selective, in their own processes), whose output was captured as `capfd` captures it."""
    tmp_path, out, err = finished_sweep.root, finished_sweep.out, finished_sweep.err
    monkeypatch.chdir(tmp_path)
    # Every phase of a trial, and the sweep's count with the time left.
    assert re.search(r"trial \w+ partition 1/2: 2/4 steps, recon loss \d", out), out
    assert re.search(
        r"partition 2/2: 4/4 steps, recon loss [\d.]+, masks scored on 1 actor \(\d+ images", out
    )
    assert re.search(r"fine-tune step 3/6: miou [\d.]+", out)
    assert re.search(r"\[1/3 done; about \d+ s left; best", out), out
    assert "[3/3 done; best" in out
    # Statuses in words; the score says which validation it is.
    assert "trials ranked by miou (last validation)" in out
    assert re.search(r"\w{8}\s+finished\s+\d\.\d{4}", out) and "TERMINATED" not in out
    # No line of Ray's, Tune's or MLflow's own.
    assert not [line for line in (out + err).splitlines() if ENGINE_LINE.search(line)], err
    # A finished trial keeps one checkpoint: its final weights, without the optimizer state.
    experiment = tmp_path / "runs" / "tiny"
    for trial in (experiment / "train").iterdir():
        checkpoints = sorted(trial.glob("checkpoint_*"))
        assert len(checkpoints) == 1, checkpoints
        state = torch.load(checkpoints[0] / STATE_FILE, weights_only=True)
        assert "model" in state and "optimizer" not in state
    # `resume` of the finished sweep: one line, exit 0, nothing written.
    before = _files(tmp_path)
    assert main(["resume", str(experiment)]) == 0
    out, err = capfd.readouterr()
    assert out.splitlines() == [
        line for line in out.splitlines() if line.startswith("nothing to resume: sweep tiny")
    ]
    assert len(out.splitlines()) == 1 and "finished all 3 trials" in out and not err
    assert _files(tmp_path) == before


@pytest.mark.slow
def test_verbose_shows_the_engines_lines_and_quiet_hides_the_phases(tmp_path):
    """Two sweeps of one trial, started together (each starts its own local Ray; sweeps
    starting together on one new sqlite file are tests/test_sweep.py's drivers test): with
    --verbose, and with --quiet and search.score=best."""
    spec = _spec(tmp_path, num_samples=1)
    argv = ["run", str(spec), "--storage", "runs"]
    loud = _cli([*argv, "--verbose"], tmp_path)
    quiet = _cli([*argv, "--name", "hush", "--quiet", "--set", "search.score=best"], tmp_path)
    loud_out, quiet_out = (process.communicate(timeout=600)[0] for process in (loud, quiet))
    assert loud.returncode == 0, loud_out[-3000:]
    assert "Started a local Ray instance" in loud_out  # Ray's own INFO line
    assert "partition 2/2" in loud_out
    assert quiet.returncode == 0, quiet_out[-3000:]
    assert "trials ranked by miou (best validation)" in quiet_out
    assert re.search(r"best trial \w+: miou \(best validation\) \d\.\d{4}", quiet_out)
    assert " partition 1/2:" not in quiet_out and "fine-tune step" not in quiet_out
    assert "finished" in quiet_out and not ENGINE_LINE.search(quiet_out)


def test_score_best_ranks_by_the_best_validation(tmp_path):
    from smsweep.spec.search_schema import score_key
    from smsweep.verdict.arms import score_label

    assert score_key("miou", "best") == "best/miou" and score_key("miou", "last") == "miou"
    assert score_label("miou", "best") == "miou (best validation)"


def test_help_says_what_the_tool_does():
    text = build_parser().format_help()
    assert "Sweeps of masked-image-modeling pretraining for segmentation" in text
    assert "nothing else lives here" not in text


def _cli(argv, cwd) -> subprocess.Popen:
    """`python -m smsweep ARGV` started in `cwd` with a bare environment, its output (standard
    error within it) read with `communicate`."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.Popen(
        [sys.executable, "-m", "smsweep", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
