"""A sweep whose --storage is an object store (s3://), against a local S3 emulator (moto's
server on 127.0.0.1): killed with SIGKILL, resumed and reported from the bucket, and the
clear refusals (no such bucket, an endpoint that does not answer, no Optuna database)."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from smsweep.cli import main
from smsweep.engines import claim, tracking
from smsweep.engines.train import TrialFailed, run_trial
from smsweep.faults import ENV as FAULTS_ENV
from smsweep.trial.reports import RESULT_FILE
from tests.servers import free_port
from tests.test_reliability import steps
from tests.test_sweep import _start, mlflow_runs, tiny_sweep, write_spec
from tests.test_trial import tiny_spec

moto_server = pytest.importorskip("moto.server")
pafs = pytest.importorskip("pyarrow.fs")

BUCKET = "sweeps"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server with one bucket; the AWS settings that point at it, for this process
    and the sweeps it starts (pyarrow reads them in every Ray process)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)
        patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        filesystem = pafs.S3FileSystem(
            endpoint_override=settings["AWS_ENDPOINT_URL"],
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        filesystem.create_dir(BUCKET)
        yield filesystem
    server.stop()


def keys(filesystem, prefix: str) -> list[str]:
    """Every object under `prefix`, relative to it."""
    selector = pafs.FileSelector(prefix, recursive=True, allow_not_found=True)
    found = filesystem.get_file_info(selector)
    return sorted(
        info.path.removeprefix(prefix + "/") for info in found if info.type == pafs.FileType.File
    )


@pytest.mark.slow
def test_a_sweep_in_s3_survives_sigkill_resumes_and_reports_from_the_bucket(
    s3, tmp_path, monkeypatch, capsys
):
    """One trial with Ray Train, killed (SIGKILL to the sweep's process group) as it begins
    fine-tuning, resumed from the bucket; then `resume` of the finished sweep and `report`,
    called in this process (the bucket's settings are in its environment), from `tmp_path`
    so that anything they wrote outside the bucket would show there."""
    storage = f"s3://{BUCKET}/team/runs"
    study = f"search.storage=sqlite:///{tmp_path / 'optuna.db'}"
    spec = write_spec(tmp_path, tiny_sweep(num_samples=1))
    marker = tmp_path / "paused"
    os.environ[FAULTS_ENV] = json.dumps({"pause_at": "finetune:0", "marker": str(marker)})
    try:
        sweep = _start(["run", str(spec), "--storage", storage, "--set", study], tmp_path)
    finally:
        del os.environ[FAULTS_ENV]
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert sweep.poll() is None, sweep.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the sweep never reached fine-tuning"
        time.sleep(0.5)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    prefix = f"{BUCKET}/team/runs/tiny"
    assert claim.CLAIM_FILE in keys(s3, prefix), "a killed driver leaves its claim in the bucket"
    resumed = _start(["resume", f"{storage}/tiny"], tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert f"took over {storage}/tiny from a driver that is gone" in output

    parents, children = mlflow_runs(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [run.info.status for run in parents] == ["FINISHED"]
    assert [run.info.status for run in children] == ["FINISHED"]
    for run in children:  # the partitions and validations before the kill ran once
        assert steps(tmp_path, run, "recon_loss") == [0, 1]
        assert steps(tmp_path, run, "miou") == [0, 1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "galleries")}
        assert artifacts == {"galleries/partition_000.png", "galleries/partition_001.png"}

    stored = keys(s3, prefix)
    for name in ("smsweep.json", tracking.RUN_FILE, "finished.json", "report.html"):
        assert name in stored, stored
    assert claim.CLAIM_FILE not in stored, "released at the end"
    assert any(key.startswith("experiment_state-") for key in stored), "Tune's state"
    for run in children:
        trial = run.data.tags[tracking.TRIAL_ID]
        mine = [key.removeprefix(f"train/{trial}/") for key in stored if f"/{trial}/" in key]
        assert "result.json" in mine, mine
        assert {"galleries/partition_000.png", "galleries/partition_001.png"} <= set(mine)
        assert any(k.startswith("checkpoint_") and k.endswith("/state.pt") for k in mine), mine
        result = json.loads(s3.open_input_stream(f"{prefix}/train/{trial}/result.json").read())
        assert result["metrics"]["done"] and result["metrics"]["miou"] == run.data.metrics["miou"]
    # Nothing under a local storage directory: only the spec, the marker, MLflow and Optuna.
    local = sorted(path.name for path in tmp_path.iterdir())
    assert local == ["mlartifacts", "mlflow.db", "optuna.db", "paused", "sweep.yaml"]

    # `resume` of the finished sweep writes nothing; `report` rebuilds the page in the bucket.
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["resume", f"{storage}/tiny"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    s3.delete_file(f"{prefix}/report.html")
    assert main(["report", f"{storage}/tiny"]) == 0
    output = capsys.readouterr().out
    assert output.strip().splitlines()[-1] == f"{storage}/tiny/report.html"
    page = s3.open_input_stream(f"{prefix}/report.html").read().decode()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 2  # galleries
    assert "finished" in page and 'class="note section-error"' not in page
    assert sorted(path.name for path in tmp_path.iterdir()) == local


@pytest.mark.slow
def test_a_trial_in_its_own_process_checkpoints_to_the_bucket_and_resumes_there(s3, monkeypatch):
    """train_workers: 0 (no Ray Train): the in-process loop puts its checkpoints in the bucket
    whole, keeps the newest, resumes from it after a failure, and replays a finished trial."""
    import ray

    spec = tiny_spec(resources={"train_workers": 0, "cpus_per_trial": 1, "scoring_actors": 0})
    storage = f"s3://{BUCKET}/trials"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # the loop runs in this process: the fault is read from this process's environment
        monkeypatch.setenv(FAULTS_ENV, json.dumps({"raise_after_partition": 1}))
        with pytest.raises(TrialFailed, match="raise_after_partition=1"):
            run_trial(spec, storage_path=storage, run_name="here")
        monkeypatch.delenv(FAULTS_ENV)
        resumed = run_trial(spec, storage_path=storage, run_name="here")
        replayed = run_trial(spec, storage_path=storage, run_name="here")
    finally:
        ray.shutdown()
    assert [r.step for r in resumed.reports if r.phase == "pretrain"] == [2]
    assert resumed.metrics["done"] and resumed.checkpoint.startswith(f"{storage}/here/checkpoint_")
    stored = keys(s3, f"{BUCKET}/trials/here")
    assert RESULT_FILE in stored and "galleries/partition_002.png" in stored, stored
    kept = {key.split("/")[0] for key in stored if key.startswith("checkpoint_")}
    assert kept == {resumed.checkpoint.rpartition("/")[2]}, "keep_checkpoints: 1"
    assert replayed.metrics["replayed"] and replayed.metrics["miou"] == resumed.metrics["miou"]


@pytest.mark.parametrize("problem", ["no bucket", "no answer", "no study"])
def test_an_object_store_that_cannot_hold_the_sweep_exits_2_naming_the_fix(
    problem, s3, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, tiny_sweep(num_samples=1))
    storage, study = f"s3://{BUCKET}/refused", ["--set", "search.storage=sqlite:///optuna.db"]
    if problem == "no bucket":
        storage = "s3://no-such-bucket/runs"
    elif problem == "no answer":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    else:
        study = []
    assert main(["run", str(spec), "--storage", storage, *study]) == 2
    error = capsys.readouterr().err
    expected = {
        "no bucket": "has no bucket 'no-such-bucket'; create it",
        "no answer": "cannot be reached",
        "no study": "set search.storage to a database URL",
    }[problem]
    assert expected in error and "Traceback" not in error, error
    if problem == "no answer":
        assert "AWS_ENDPOINT_URL" in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep.yaml"]
    assert keys(s3, f"{BUCKET}/refused") == [], "nothing written to the bucket"
