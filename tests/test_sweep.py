"""Whole sweeps on a real local Ray with real MLflow: run, kill -9 and resume, Ctrl-C, and
drivers that meet: two runs of one experiment, a resume next to a live run, two sweeps on a new
sqlite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from smsweep.engines import claim, tracking

REPO = Path(__file__).resolve().parents[1]


IN_PROCESS = {"train_workers": 0, "cpus_per_trial": 1}  # no Ray Train start-up per trial


def tiny_sweep(num_samples: int = 3, *, in_process: bool = False, **search) -> dict:
    """A tiny real sweep; `in_process`: its trials train in their own processes (for tests whose
    subject is not Ray Train: about 15 s less per trial)."""
    spec = {
        "name": "tiny",
        "seed": 1,
        "data": {"image_size": 32, "num_classes": 4, "num_images": 24, "val_fraction": 0.25},
        "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        "pretrain": {"partitions": 2, "epochs_per_partition": 1, "batch_size": 8},
        "masking": {"strategy": "random", "patch_size": 8, "samples": 2},
        "finetune": {"epochs": 2, "batch_size": 8},
        "search": {
            "num_samples": num_samples,
            "max_concurrent": 1,
            "space": {
                "masking.strategy": {"choice": ["random", "selective", "block"]},
                "masking.ratio": {"uniform": [0.4, 0.6]},
                "masking.samples": {"randint": [1, 3], "when": {"masking.strategy": ["selective"]}},
            },
            **search,
        },
        "resources": {
            "cpus_per_trial": 0.5,
            "train_workers": 1,
            "cpus_per_worker": 1,
            "scoring_actors": 1,
            "cpus_per_actor": 0.5,
        },
        "tracking": {"mlflow_uri": "sqlite:///mlflow.db"},
    }
    if in_process:
        spec["resources"] |= IN_PROCESS
    return spec


def write_spec(directory: Path, spec: dict) -> Path:
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def mlflow_runs(directory: Path, experiment: str = "tiny") -> tuple[list, list]:
    client = MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE) == "sweep"]
    children = [r for r in runs if r.data.tags.get(tracking.ROLE) == "trial"]
    return parents, children


def finished_trials(experiment_dir: Path) -> list[str]:
    """Trials Tune recorded as TERMINATED, from its experiment state on disk."""
    state = max(experiment_dir.glob("experiment_state-*.json"))
    trials = json.loads(state.read_text())["trial_data"]
    return [json.loads(meta)["trial_id"] for meta, _ in trials if '"TERMINATED"' in meta]


@pytest.mark.slow
def test_sweep_tracks_one_parent_and_a_nested_run_per_trial(finished_sweep):
    """What a sweep logs to MLflow (one parent, a nested run per trial with its metrics, tags
    and artifacts), what it prints at the end, and that it writes nothing else: the session's
    tiny sweep (tests/conftest.py), which tests/test_report.py reports on. Its trials train in
    their own processes; sweeps with Ray Train are the subject of tests/test_reliability.py's
    kill points, tests/test_object_store.py and tests/test_cluster.py."""
    tmp_path, out = finished_sweep.root, finished_sweep.out
    assert "best trial" in out and "mlflow ui --backend-store-uri" in out
    parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "best_miou" in parents[0].data.metrics
    assert len(children) == 3
    assert {r.data.params["masking.strategy"] for r in children} == {"random", "selective", "block"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.PARENT] == parents[0].info.run_id
        assert run.data.tags["smsweep.precision"] == "float32 + channels_last"  # auto on a CPU
        assert 0.0 <= run.data.metrics["miou"] <= 1.0
        assert "iou/background" in run.data.metrics and "recon_loss" in run.data.metrics
        cost = run.data.metrics
        assert cost["cost/device_seconds"] >= cost["cost/seconds"] > cost["compute_seconds"]
        assert {"config.yaml", "iou_per_class.csv", "galleries"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)
        }
        assert len(client.get_metric_history(run.info.run_id, "miou")) == 2  # one per epoch
    assert len(finished_trials(tmp_path / "runs" / "tiny")) == 3
    assert not (tmp_path / "runs" / "tiny" / claim.CLAIM_FILE).exists(), "released at the end"
    # Nothing written outside the storage path and the MLflow store.
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["mlartifacts", "mlflow.db", "runs", "sweep.yaml"]


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "smsweep", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


def _wait_for(process: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if needle in line:
            return lines
        if time.monotonic() > deadline:
            break
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"never saw {needle!r}:\n{''.join(lines[-40:])}")


def _check_complete(tmp_path: Path, num_samples: int) -> None:
    parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == num_samples, "a resumed trial must continue its run, not open one"
    assert sorted(r.info.status for r in children) == ["FINISHED"] * num_samples
    trial_ids = {r.data.tags[tracking.TRIAL_ID] for r in children}
    assert set(finished_trials(tmp_path / "runs" / "tiny")) == trial_ids


@pytest.mark.slow
def test_ctrl_c_then_sigkill_of_the_resumed_sweep_resume_to_exactly_num_samples(tmp_path):
    """One sweep of three trials, stopped twice. Next to the live `run`, `resume` is refused by
    name and writes nothing. Ctrl-C in the first trial's fine-tuning stops it cleanly: exit 130,
    the resume command, no run RUNNING, the claim released. `resume` goes on with it, and is
    killed with SIGKILL once the first trial is done and the second is logging: the kill leaves
    a run RUNNING and the claim. The next `resume` takes the claim over, and the sweep ends with
    exactly three trials, each finished once in its one MLflow run."""
    spec = write_spec(tmp_path, tiny_sweep(in_process=True))
    sweep = _start(["run", str(spec), "--storage", "runs"], tmp_path)
    _wait_for(sweep, "trial ", timeout=300)  # Tune runs; the driver holds the claim
    experiment = tmp_path / "runs" / "tiny"
    held = (experiment / claim.CLAIM_FILE).read_text()
    refused = _start(["resume", str(experiment)], tmp_path)
    output, _ = refused.communicate(timeout=300)
    assert refused.returncode == 2, output[-3000:]
    assert f"is in use by a running sweep driver (pid {sweep.pid} on " in output
    assert "Traceback" not in output and len(mlflow_runs(tmp_path)[0]) == 1
    assert (experiment / claim.CLAIM_FILE).read_text() == held

    _wait_for(sweep, "fine-tune step", timeout=300)
    os.killpg(sweep.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, output[-3000:]
    assert "python -m smsweep resume" in output
    _, children = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in children}
    assert not (experiment / claim.CLAIM_FILE).exists(), "released on Ctrl-C"

    sweep = _start(["resume", str(experiment)], tmp_path)
    _wait_for(sweep, "finished", timeout=300)  # the first trial is done
    deadline = time.monotonic() + 120
    while len(mlflow_runs(tmp_path)[1]) < 2:  # and the second is logging
        assert time.monotonic() < deadline, "the second trial never opened its run"
        time.sleep(0.5)
    held = (experiment / claim.CLAIM_FILE).read_text()
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    _, children = mlflow_runs(tmp_path)
    assert "RUNNING" in {r.info.status for r in children}  # what the kill left behind
    assert (experiment / claim.CLAIM_FILE).read_text() == held  # and its claim
    resumed = _start(["resume", str(experiment)], tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert f"took over {experiment} from a driver that is gone (pid {sweep.pid} " in output
    assert "has ended" in output
    _check_complete(tmp_path, 3)
    assert not (experiment / claim.CLAIM_FILE).exists()


@pytest.mark.slow
def test_drivers_started_together_one_per_experiment_and_a_new_sqlite_store_for_all(tmp_path):
    """Two `run`s of one experiment and a third sweep, started at the same moment in one
    directory (so on one sqlite file that does not exist yet): one of the two runs that
    experiment and the other is refused by name, writing nothing; both sweeps finish."""
    spec = write_spec(tmp_path, tiny_sweep(num_samples=1, in_process=True))
    same = [_start(["run", str(spec), "--storage", "runs", "--name", "dup"], tmp_path)]
    same.append(_start(["run", str(spec), "--storage", "runs", "--name", "dup"], tmp_path))
    other = _start(["run", str(spec), "--storage", "runs", "--name", "other"], tmp_path)
    outputs = {process.pid: process.communicate(timeout=900)[0] for process in [*same, other]}
    assert other.returncode == 0, outputs[other.pid][-3000:]
    assert sorted(process.returncode for process in same) == [0, 2], [
        outputs[p.pid][-2000:] for p in same
    ]
    winner, loser = sorted(same, key=lambda process: process.returncode)
    refusal = outputs[loser.pid]
    assert f"is in use by a running sweep driver (pid {winner.pid} on " in refusal, refusal
    assert "Traceback" not in refusal and "sweep dup:" not in refusal
    for name in ("dup", "other"):
        parents, children = mlflow_runs(tmp_path, experiment=name)
        assert [run.info.status for run in parents] == ["FINISHED"]
        assert [run.info.status for run in children] == ["FINISHED"]
        experiment = tmp_path / "runs" / name
        assert len(list(experiment.glob("experiment_state-*.json"))) == 1  # one Tune driver
        assert not (experiment / claim.CLAIM_FILE).exists()
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["mlartifacts", "mlflow.db", "runs", "sweep.yaml"]
