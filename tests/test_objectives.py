"""Multi-objective sweeps (search.objectives): what Optuna is told, the Pareto front, and a real
sweep that searches mIoU against its cost."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from smsweep import report
from smsweep.cli import main
from smsweep.engines.searcher import Arms, DefineByRun
from smsweep.errors import SpecError
from smsweep.spec.load import validate_spec
from smsweep.spec.space import Distribution
from smsweep.verdict.arms import Arm
from smsweep.verdict.stats import pareto
from tests.test_arms import _arm_sweep
from tests.test_report import _sections, _sweep, _trial
from tests.test_sweep import mlflow_runs, write_spec

OBJECTIVES = [{"metric": "miou", "mode": "max"}, {"metric": "cost/device_seconds", "mode": "min"}]


def _two_objectives(storage) -> OptunaSearch:
    return OptunaSearch(
        space=DefineByRun({"masking.ratio": Distribution(uniform=(0.4, 0.6))}, {}),
        metric=["miou", "cost/device_seconds"],
        mode=["max", "min"],
        storage=storage,
        study_name="two",
        seed=0,
    )


def test_optuna_is_told_the_mean_of_every_objective_over_the_repeats():
    storage = optuna.storages.InMemoryStorage()
    arms = Arms(_two_objectives(storage), {"none": {"masking.strategy": "none"}}, repeats=3)
    ids = [f"t{i}" for i in range(9)]  # the control x 3, then two configurations x 3
    configs = {trial_id: arms.suggest(trial_id) for trial_id in ids}
    keys = [Arm.of(config).key for config in configs.values()]
    assert keys == ["control:none"] * 3 + ["config-1"] * 3 + ["config-2"] * 3
    results = {
        "t3": {"miou": 0.4, "cost/device_seconds": 10.0},
        "t4": {"miou": 0.6, "cost/device_seconds": 14.0},
        "t5": {},  # a repeat that failed: left out of both means
        "t6": {"miou": 0.5, "cost/device_seconds": 5.0},
    }
    for trial_id in ids:
        arms.on_trial_complete(trial_id, results.get(trial_id, {}), error=trial_id == "t5")
    study = optuna.load_study(study_name="two", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    first, second = sorted(study.trials, key=lambda t: t.number)
    assert first.values == pytest.approx([0.5, 12.0])  # the mean of t3 and t4
    assert second.values == pytest.approx([0.5, 5.0])  # t7, t8 reported nothing: t6 alone


def test_a_configuration_whose_repeats_all_failed_is_a_failed_optuna_trial():
    storage = optuna.storages.InMemoryStorage()
    arms = Arms(_two_objectives(storage), {}, repeats=2)
    for trial_id in ("a", "b"):
        arms.suggest(trial_id)
        arms.on_trial_complete(trial_id, None, error=True)
    [trial] = optuna.load_study(study_name="two", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL


def test_the_pareto_front_of_arm_means():
    rows = [
        ("config-1", "ratio=0.5", {"miou": 0.50, "cost/device_seconds": 10}),
        ("config-1", "ratio=0.5", {"miou": 0.70, "cost/device_seconds": 12}),
        ("config-2", "ratio=0.6", {"miou": 0.50, "cost/device_seconds": 5}),
        ("config-3", "ratio=0.4", {"miou": 0.40, "cost/device_seconds": 20}),  # dominated
        ("config-4", "ratio=0.45", {"miou": 0.90}),  # no cost: not on the plane
        ("control:none", "", {"miou": math.nan, "cost/device_seconds": 1}),
    ]
    points = pareto(rows, ["miou", "cost/device_seconds"], ["max", "min"])
    assert [(p.key, p.on_front) for p in points] == [
        ("config-1", True),
        ("config-2", True),
        ("config-3", False),
    ]
    assert points[0].means == pytest.approx((0.6, 11.0)) and points[0].runs == 2


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"objectives": OBJECTIVES[:1]}, "needs two or more objectives"),
        ({"objectives": OBJECTIVES, "metric": "pixel_accuracy"}, "leave metric and mode out"),
        ({"objectives": [OBJECTIVES[0], OBJECTIVES[0]]}, "names a metric twice"),
        ({"objectives": OBJECTIVES, "scheduler": "asha"}, "use scheduler: fifo"),
        ({"objectives": [{"metric": "miou"}, OBJECTIVES[1]]}, "objectives.0.mode"),
    ],
)
def test_bad_objectives_name_the_problem(search, message):
    with pytest.raises(SpecError, match=message):
        validate_spec({"search": search})


def test_the_first_objective_is_the_ranked_metric():
    search = validate_spec({"search": {"objectives": OBJECTIVES, "score": "best"}}).search
    assert (search.metric, search.mode) == ("miou", "max")
    assert search.objective_metrics == ("best/miou", "cost/device_seconds")
    assert search.objective_modes == ("max", "min")


def test_the_report_draws_the_front_or_says_why_not():
    trials = [_trial(f"t{i}", "random", 0.4 + i / 10, 0.3 + i / 10) for i in range(3)]
    for number, trial in enumerate(trials, start=1):
        trial.arm = Arm({"masking.ratio": trial.params["masking.ratio"]}, configuration=number)
        trial.metrics["cost/device_seconds"] = 10.0 * number
    single = _sections(report.render(_sweep(trials), report.load_dashboard()))
    assert "single-objective sweep" in single["pareto"]
    sweep = _sweep(trials)
    sweep.spec = {"search": {"objectives": OBJECTIVES}}
    section = _sections(report.render(sweep, report.load_dashboard()))["pareto"]
    assert "plotly" in section.lower() and "Pareto front" in section
    assert all(f"config-{n}" in section for n in (1, 2, 3))  # each better on one objective


@pytest.mark.slow
def test_a_sweep_searches_miou_against_cost(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw = _arm_sweep(objectives=OBJECTIVES)
    raw["search"]["sampler"] = "tpe"
    raw["search"]["space"] = {"masking.ratio": {"choice": [0.4, 0.6]}}
    raw["search"]["controls"] = []
    assert main(["run", str(write_spec(tmp_path, raw)), "--storage", "runs"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (miou max, cost/device_seconds min):" in out
    parents, children = mlflow_runs(tmp_path)
    assert len(children) == 4 and all("cost/device_seconds" in r.data.metrics for r in children)
    by_arm: dict[str, list[tuple[float, float]]] = {}
    for run in children:
        metrics = run.data.metrics
        key = run.data.tags["smsweep.configuration"]
        by_arm.setdefault(key, []).append((metrics["miou"], metrics["cost/device_seconds"]))
    storage = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'optuna.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    told = sorted(tuple(t.values) for t in study.trials)
    means = sorted(
        tuple(statistics.fmean(column) for column in zip(*runs, strict=True))
        for runs in by_arm.values()
    )
    assert told == [pytest.approx(m) for m in means]  # both objectives, averaged over repeats
    front = {p.key for p in pareto(
        [(key, key, {"miou": m, "cost/device_seconds": c}) for key, runs in by_arm.items()
         for m, c in runs],
        ["miou", "cost/device_seconds"], ["max", "min"],
    ) if p.on_front}  # fmt: skip
    assert set(parents[0].data.tags["smsweep.pareto"].split(",")) == front
    page = (tmp_path / "runs" / "tiny" / "report.html").read_text()
    sections = _sections(page)
    assert "single-objective sweep" not in sections["pareto"]
    assert "could not compute" not in sections["importances"]
