"""The verdict where users compare runs: a sweep's runs, written by the sweep's own tracking code
into a real sqlite store, served by a real `mlflow server` and drawn by its UI in headless
Chromium. The trial runs carry their arms' names and the parent run's description the verdict."""

from __future__ import annotations

import html
import json
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from smsweep.engines import mlflow_store, tracking
from smsweep.engines.store import Location
from smsweep.spec.load import validate_spec
from smsweep.summary import SweepSummary, finish, ranked
from smsweep.verdict.arms import CONFIGURATION, CONTROL, PHASE, TRIAL_INDEX, Arm
from smsweep.verdict.stats import Verdict
from tests.servers import free_port, start_mlflow_server, stop, wait_until_answers
from tests.test_report import _browser

REPEATS = 3
ARMS = {  # the trial config of each arm (without its repeat) and its mIoU per repeat
    "config-1": (
        {"masking.strategy": "random", "masking.ratio": 0.592, "masking.patch_size": 4,
         CONFIGURATION: 1},
        [0.41, 0.43, 0.42],
    ),
    "config-2": (
        {"masking.strategy": "selective", "masking.ratio": 0.55, "masking.patch_size": 12,
         "masking.samples": 5, CONFIGURATION: 2},
        [0.46, 0.47, 0.45],
    ),
    "control:none": ({"masking.strategy": "none", CONTROL: "none"}, [0.38, 0.40, 0.39]),
}  # fmt: skip


@dataclass(frozen=True)
class Served:
    address: str  # the MLflow server's
    run: tracking.SweepRun
    names: list[str]  # the trial runs' names, as the trials open them
    verdict: Verdict


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    """`mlflow server` on 127.0.0.1 over a finished sweep's sqlite store: 3 arms x 3 repeats,
    each trial's run opened as a trial opens it (`Arm.run_name`, `Arm.tags`), the sweep ended
    by `summary.finish`. The server starts while the sweep is written (it takes seconds)."""
    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow_store.prepare(uri)  # the tables, before the server opens the file
    port = free_port()
    server = start_mlflow_server(root, port, store=uri)
    try:
        run, names, verdict = _finished_sweep(uri, root / "runs" / "ui")
        address = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{address}/health", server, seconds=120)
        yield Served(address, run, names, verdict)
    finally:
        stop(server)


def _finished_sweep(uri: str, experiment_dir: Path) -> tuple[tracking.SweepRun, list[str], Verdict]:
    spec = validate_spec(
        {"name": "ui", "search": {"num_samples": 2, "repeats": REPEATS, "controls": ["none"]}}
    )
    experiment_dir.mkdir(parents=True)
    run = tracking.start_sweep_run(uri, "ui", "ui", {}, experiment_dir)
    rows = []
    for config, scores in ARMS.values():
        for repeat, score in enumerate(scores):
            arm = Arm.of({**config, TRIAL_INDEX: repeat})
            trial_id = f"trial_{len(rows):05d}"
            trial = tracking.TrialRun(
                run,
                trial_id,
                arm.run_name(REPEATS),
                arm.params,
                tags=arm.tags(),
            )
            trial.log({"miou": score}, step=0)
            trial.end("FINISHED")
            rows.append({"trial_id": trial_id, "status": "TERMINATED", "miou": score, "arm": arm})
    summary = SweepSummary(
        Location.of(experiment_dir),
        uri,
        rows=ranked(rows, "miou", "max"),
        trial_ids={row["trial_id"] for row in rows},
    )
    finish(spec, run, summary, echo=lambda line: None)
    return run, [row["arm"].run_name(REPEATS) for row in rows], summary.verdict


def _page_texts(address: str, routes: list[str], profiles: Path) -> list[str]:
    """The text the MLflow UI draws at each route (its app's routes, after `#`) once its
    requests are answered: the DOM headless Chromium holds, without tags. The pages load
    side by side, one browser each."""
    browser = _browser()
    loads = []
    for number, route in enumerate(routes):
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        command += ["--disable-dev-shm-usage", f"--user-data-dir={profiles / str(number)}"]
        command += ["--window-size=1600,2000", "--virtual-time-budget=6000", "--dump-dom"]
        command += ["--timeout=60000"]  # a request left unanswered stops the page, not the test
        loads.append(
            subprocess.Popen(
                [*command, f"{address}/#{route}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    texts = []
    for load in loads:
        dom, errors = load.communicate(timeout=120)
        assert load.returncode == 0, errors[-3000:]
        dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
        texts.append(" ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split()))
    return texts


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_trial_runs_by_arm_and_the_verdict_on_the_sweeps_run(
    served, tmp_path
):
    sweep = served.run
    runs = tracking.trial_runs(sweep)
    assert sorted(run.info.run_name for run in runs) == sorted(served.names)
    assert {run.data.tags[PHASE] for run in runs} == {"search"}
    request = urllib.request.Request(
        f"{served.address}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [sweep.experiment_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert {run["info"]["run_name"] for run in json.load(answer)["runs"]} == {
            *served.names,
            "ui",
        }

    experiment = f"/experiments/{sweep.experiment_id}"
    table, page = _page_texts(
        served.address,
        # the experiment's table sorted by mIoU (which lists the trial runs, not only the
        # sweep's run), and the sweep's run
        [f"{experiment}/runs?orderByKey=metrics.%60miou%60&orderByAsc=false",
         f"{experiment}/runs/{sweep.run_id}"],
        tmp_path,
    )  # fmt: skip
    for name in served.names:
        assert name in table, name
    assert "config-2 strategy=selective ratio=0.55 patch_size=12 samples=5 · repeat 2/3" in table
    assert "control none · repeat 1/3" in table

    # The sweep's run: its description is the verdict; its child runs are listed by name.
    description = page[page.index("Description") : page.index("Metrics (")]
    assert "Verdict: miou (last validation)" in description
    for sentence in served.verdict.sentences():
        assert " ".join(sentence.split()) in description, sentence
    best = served.verdict.best
    assert f"config-2 {best.label} 3 {best.interval.mean:.3f}" in description
    assert "control none 3 0.390" in description
    children = page[page.index("Child runs") :]
    for name in served.names:
        assert name in children, name
