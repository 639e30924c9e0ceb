"""A sweep's arms: repeats of every configuration, controls outside the sampler, and what
Optuna is told (one value per configuration: the mean of its repeats)."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess

import optuna
import pytest
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from smsweep.cli import main
from smsweep.engines import tracking
from smsweep.engines.searcher import Arms, DefineByRun
from smsweep.errors import SpecError
from smsweep.spec.load import validate_spec
from smsweep.spec.search_schema import trial_count
from smsweep.spec.space import Distribution, control_params
from smsweep.verdict.arms import (
    CONFIGURATION,
    CONTROL,
    NAME_LIMIT,
    PHASE,
    REPEAT,
    TRIAL_INDEX,
    Arm,
)
from smsweep.verdict.stats import ArmRun, judge
from tests.servers import free_port, stop, wait_until_answers
from tests.test_sweep import _start, _wait_for, mlflow_runs, tiny_sweep, write_spec


def _searcher(storage, points=None) -> OptunaSearch:
    space = {"masking.ratio": Distribution(uniform=(0.4, 0.6))}
    return OptunaSearch(
        space=DefineByRun(space, {}),
        metric="miou",
        mode="max",
        storage=storage,
        study_name="arms",
        seed=0,
        points_to_evaluate=points,
    )


def test_controls_run_first_outside_the_sampler_and_optuna_sees_each_configuration_once():
    storage = optuna.storages.InMemoryStorage()
    controls = {"none": {"masking.strategy": "none"}}
    arms = Arms(_searcher(storage), controls, repeats=3)
    total = trial_count(num_samples=2, controls=1, repeats=3)
    configs = {f"t{i}": arms.suggest(f"t{i}") for i in range(total)}
    shown = [Arm.of(config) for config in configs.values()]
    assert [arm.key for arm in shown] == ["control:none"] * 3 + ["config-1"] * 3 + ["config-2"] * 3
    assert [arm.repeat for arm in shown] == [0, 1, 2] * 3
    assert shown[0].params == {"masking.strategy": "none"} and shown[0].control == "none"
    assert shown[3].params == shown[5].params != shown[6].params  # a configuration's repeats agree
    scores = {trial_id: 0.3 + 0.01 * number for number, trial_id in enumerate(configs)}
    for trial_id, score in scores.items():
        arms.on_trial_complete(trial_id, {"miou": score})
    study = optuna.load_study(study_name="arms", storage=storage)
    values = sorted(trial.value for trial in study.trials)
    expected = [
        statistics.fmean([scores[f"t{i}"] for i in group]) for group in ((3, 4, 5), (6, 7, 8))
    ]
    assert values == pytest.approx(expected)  # the controls never reach Optuna


def test_the_grouping_survives_a_save_and_restore_between_repeats(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    first = Arms(_searcher(storage), {"none": {"masking.strategy": "none"}}, repeats=2)
    seen = [Arm.of(first.suggest(f"t{i}")) for i in range(3)]  # control x2, config-1 repeat 0
    SearchGenerator(first).save_to_dir(str(tmp_path), session_str="test")  # as Tune saves it
    again = Arms(_searcher(optuna.storages.InMemoryStorage()), {"none": {}}, repeats=2)
    SearchGenerator(again).restore_from_dir(str(tmp_path))  # as Tuner.restore restores it
    following = Arm.of(again.suggest("t3"))
    assert (following.key, following.repeat) == ("config-1", 1)
    assert following.params == seen[2].params
    again.on_trial_complete("t0", {"miou": 0.1})  # a control: not Optuna's business


def test_after_the_search_the_best_and_the_controls_run_again_on_fresh_seeds(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    controls = {"none": {"masking.strategy": "none"}}
    arms = Arms(_searcher(storage), controls, repeats=2, configurations=3, confirm=(1, 2))
    search = {f"t{i}": arms.suggest(f"t{i}") for i in range(8)}  # 1 control + 3 configs, x2
    # config-2 is best on the search's seeds
    score = {"control:none": 0.30, "config-1": 0.40, "config-2": 0.45, "config-3": 0.35}
    for trial_id, config in list(search.items())[:-1]:
        arm = Arm.of(config)
        assert arms.suggest("early") is None  # waits while a search trial runs
        arms.on_trial_complete(trial_id, {"miou": score[arm.key] + 0.01 * arm.repeat})
    SearchGenerator(arms).save_to_dir(str(tmp_path), session_str="test")  # a kill, a resume
    arms = Arms(_searcher(storage), controls, repeats=2, configurations=3, confirm=(1, 2))
    SearchGenerator(arms).restore_from_dir(str(tmp_path))
    assert arms.suggest("early") is None
    last = list(search)[-1]
    arms.on_trial_complete(last, error=True)  # config-3, repeat 1 failed
    confirmation = [Arm.of(arms.suggest(f"c{i}")) for i in range(4)]
    assert arms.suggest("c4") is Arms.FINISHED
    assert [(a.key, a.repeat, a.phase) for a in confirmation] == [
        ("config-2", 2, "confirm"),
        ("control:none", 2, "confirm"),
        ("config-2", 3, "confirm"),
        ("control:none", 3, "confirm"),
    ]
    assert confirmation[0].params == Arm.of(search["t4"]).params  # config-2's values
    assert confirmation[0].describe(2) == (
        f"config-2 ({confirmation[0].label}), confirmation (repeat 3)"
    )
    for i in range(4):
        arms.on_trial_complete(f"c{i}", {"miou": 0.9})  # never reaches Optuna
    study = optuna.load_study(study_name="arms", storage=storage)
    assert len(study.trials) == 3 and all(t.value is None or t.value < 0.5 for t in study.trials)


def _drive(arms, score, start=0, count=100):
    """Hand out up to `count` trials, one at a time, until the searcher waits or is done,
    ending each with `score(arm)`; returns the arms handed out, the last answer, the next
    trial number."""
    handed, config = [], None
    for number in range(start, start + count):
        config = arms.suggest(f"t{number}")
        if config is None or config == Arms.FINISHED:
            return handed, config, number
        arm = Arm.of(config)
        handed.append(arm)
        arms.on_trial_complete(f"t{number}", {"miou": score(arm)})
    return handed, config, start + count


def test_a_race_drops_configurations_the_best_is_declared_above(tmp_path):
    """4 configurations, 2 repeats, racing up to 6, first test at 3: config-2 is 10 points
    above the others, config-3 only 0.5, with a point of seed-to-seed noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.02, 10)
    true = {"config-1": 0.40, "config-2": 0.50, "config-3": 0.495, "config-4": 0.40}

    def score(arm):
        return 0.3 if arm.control else true[arm.key] + seed_effect[arm.repeat] + rng.normal(0, 0.01)

    def searcher(storage):
        return Arms(
            _searcher(storage),
            {"none": {"masking.strategy": "none"}},
            2,
            configurations=4,
            racing=(6, 3),
            confirm=(1, 2),
        )

    storage = optuna.storages.InMemoryStorage()
    arms = searcher(storage)
    handed, _, number = _drive(arms, score, count=18)
    assert [a.repeat for a in handed[10:]] == [2] * 5 + [3] * 3  # repeat 3: untested at 2
    assert {a.key for a in handed[15:]} == {"config-2", "config-3", "control:none"}
    assert arms.race["dropped"] == {"config-1": 3, "config-4": 3}
    SearchGenerator(arms).save_to_dir(str(tmp_path), session_str="test")  # a kill, a resume
    arms = searcher(storage)
    SearchGenerator(arms).restore_from_dir(str(tmp_path))
    more, end, _ = _drive(arms, score, start=number)
    rounds = [a for a in more if not a.confirming]
    assert [a.repeat for a in rounds] == [4] * 3 + [5] * 3  # config-3 stays: up to max_repeats
    confirmation = [a for a in more if a.confirming]
    assert end == Arms.FINISHED and len(confirmation) == 4
    leader = arms.race["racing"][0]  # config-2 or config-3: half a point is not decided
    assert leader in ("config-2", "config-3")
    assert {(a.key, a.repeat) for a in confirmation} == {
        (key, repeat) for key in (leader, "control:none") for repeat in (6, 7)
    }
    study = optuna.load_study(study_name="arms", storage=storage)
    assert len(study.trials) == 4  # Optuna saw the search's two repeats of each configuration


def test_arm_of_a_plain_config_and_its_tags():
    arm = Arm.of({"masking.ratio": 0.5})
    assert (arm.repeat, arm.control, arm.configuration) == (0, None, None)
    assert arm.key.startswith("params-") and arm.key == Arm.of({"masking.ratio": 0.5}).key
    numbered = Arm.of({"masking.ratio": 0.5, CONFIGURATION: 4, "__trial_index__": 2})
    assert numbered.tags() == {
        "smsweep.configuration": "config-4",
        "smsweep.repeat": "2",
        "smsweep.phase": "search",
    }
    control = Arm.of({"masking.strategy": "none", CONTROL: "none", "__trial_index__": 1})
    assert control.describe(repeats=3) == "control none, repeat 2/3"
    assert numbered.describe(repeats=3) == "ratio=0.5, repeat 3/3"
    assert numbered.describe(repeats=2) == "ratio=0.5, repeat 3 (racing)"  # after the search's
    assert arm.describe(repeats=1) == "ratio=0.5"


def test_a_trial_run_is_named_by_its_arm_and_repeat_in_the_consoles_words():
    config = {"masking.strategy": "selective", "masking.ratio": 0.55, "masking.patch_size": 12}
    numbered = Arm.of({**config, "masking.samples": 5, CONFIGURATION: 2, "__trial_index__": 1})
    assert numbered.run_name(repeats=3) == (
        "config-2 strategy=selective ratio=0.55 patch_size=12 samples=5 · repeat 2/3"
    )
    assert numbered.describe(repeats=3).endswith("samples=5, repeat 2/3")  # the console's
    control = Arm.of({"masking.strategy": "none", CONTROL: "none", "__trial_index__": 0})
    assert control.run_name(repeats=3) == "control none · repeat 1/3"
    once = Arm.of({**config, "masking.samples": 5, CONFIGURATION: 2, "__trial_index__": 0})
    assert once.run_name(repeats=1) == (
        "config-2 strategy=selective ratio=0.55 patch_size=12 samples=5"
    )
    assert numbered.run_name(repeats=1).endswith(" · repeat 2 (racing)")  # after the search's
    fresh = Arm.of({**config, CONFIGURATION: 2, "__trial_index__": 3, PHASE: "confirm"})
    assert fresh.run_name(repeats=3) == (
        "config-2 (strategy=selective ratio=0.55 patch_size=12) · confirmation (repeat 4)"
    )
    wide = Arm.of({f"a.key{i}": "x" * 20 for i in range(20)} | {CONFIGURATION: 7})
    assert len(wide.run_name(repeats=3)) == NAME_LIMIT
    assert wide.run_name(repeats=3).endswith("… · repeat 1/3")


def test_controls_in_the_spec():
    spec = validate_spec(
        {
            "search": {
                "repeats": 3,
                "controls": [
                    "none",
                    {"name": "random_partition", "set": {"masking.refresh": "partition"}},
                ],
            }
        }
    )
    assert control_params(spec) == {
        "none": {"masking.strategy": "none"},
        "random_partition": {"masking.refresh": "partition"},
    }


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"controls": ["nonee"]},
            "search.controls `nonee` is not a masking strategy; did you mean none?",
        ),
        ({"controls": ["none", "none"]}, "search.controls names none more than once"),
        ({"controls": [{"name": "x", "set": {}}]}, "search.controls `x` sets nothing"),
        (
            {"controls": [{"name": "x", "set": {"masking.ratoi": 0.5}}]},
            "did you mean `masking.ratio`?",
        ),
        (
            {"controls": [{"name": "x", "set": {"masking.ratio": 1.5}}]},
            "search.controls `x` gives an invalid trial; fix what it sets",
        ),
        ({"repeats": 2, "scheduler": "asha"}, "use scheduler: fifo with search.repeats"),
        ({"controls": ["none"], "scheduler": "asha"}, "use scheduler: fifo with search.repeats"),
        (
            {"num_samples": 2, "confirm": {"top": 3}},
            "search.confirm.top 3 is more than the 2 configurations",
        ),
        ({"confirm": {"top": 1}, "scheduler": "asha"}, "use scheduler: fifo with search.confirm"),
        ({"confirm": {"repeats": 1}}, "greater than or equal to 2"),
    ],
)
def test_bad_controls_and_repeats_name_the_problem(search, message):
    with pytest.raises(SpecError, match=None) as caught:
        validate_spec({"search": search})
    assert message in str(caught.value)


def _arm_sweep(**search) -> dict:
    """Two configurations (random, selective), two repeats, the `none` control: 6 short trials,
    trained in the trial's own process."""
    spec = tiny_sweep(num_samples=2, repeats=2, controls=["none"], **search)
    spec["search"]["space"] = {"masking.strategy": {"choice": ["random", "selective"]}}
    spec["search"]["sampler"] = "grid"
    spec["resources"] |= {"train_workers": 0, "cpus_per_trial": 1}
    return spec


def _arms_of(children) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for run in children:
        found.setdefault(run.data.tags[CONFIGURATION], []).append(int(run.data.tags[REPEAT]))
    return {key: sorted(repeats) for key, repeats in found.items()}


@pytest.mark.slow
def test_a_sweep_with_repeats_and_a_control(tmp_path, monkeypatch, capsys):
    """Also: each trial fine-tunes twice (finetune.repeats), and the verdict says where the
    noise is."""
    monkeypatch.chdir(tmp_path)
    raw = _arm_sweep()
    raw["finetune"]["repeats"] = 2
    spec = write_spec(tmp_path, raw)
    assert main(["run", str(spec), "--storage", "runs"]) == 0
    out = capsys.readouterr().out
    assert "Where the noise is (over 6 trials of 2 fine-tunes): fine-tunes of one" in out
    assert "2 configurations x 2 repeats + 1 control x 2 = 6 trials" in out
    assert "control none, repeat 2/2" in out
    parents, children = mlflow_runs(tmp_path)
    assert _arms_of(children) == {"control:none": [0, 1], "config-1": [0, 1], "config-2": [0, 1]}
    by_arm: dict[str, dict[int, float]] = {}
    for run in children:
        tags, params = run.data.tags, run.data.params
        by_arm.setdefault(tags[CONFIGURATION], {})[int(tags[REPEAT])] = run.data.metrics["miou"]
        assert params["repeat"] == tags[REPEAT] and params["seed"] == "1"
        if tags[CONFIGURATION] == "control:none":
            assert tags[CONTROL] == "none" and params["masking.strategy"] == "none"
    strategies = {
        run.data.tags[CONFIGURATION]: run.data.params["masking.strategy"] for run in children
    }
    assert strategies == {"control:none": "none", "config-1": "random", "config-2": "selective"}
    # In the MLflow UI: each trial's run named by its arm and repeat, in the console's words.
    assert sorted(run.info.run_name for run in children) == [
        f"{arm} · repeat {repeat}/2"
        for arm in ("config-1 strategy=random", "config-2 strategy=selective", "control none")
        for repeat in (1, 2)
    ]
    assert {run.data.tags[PHASE] for run in children} == {"search"}
    # Repeats differ in their seeds: the two repeats of the control do not train alike.
    assert by_arm["control:none"][0] != by_arm["control:none"][1]
    # Optuna holds one trial per configuration, valued at the mean of its repeats.
    storage = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'optuna.db'}"  # optuna-dashboard's URL
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 2
    told = sorted(trial.value for trial in study.trials)
    means = sorted(statistics.fmean(by_arm[key].values()) for key in ("config-1", "config-2"))
    assert told == pytest.approx(means)
    assert "tiny" in _dashboard_studies(storage)  # optuna-dashboard opens the study
    # The verdict: in the console, on the parent run, and the same numbers in the report.
    verdict = judge(
        [
            ArmRun(key, key, "none" if key.startswith("control") else None, repeat, value)
            for key, values in by_arm.items()
            for repeat, value in values.items()
        ],
        "miou",
    )
    best = verdict.best
    assert "Best vs control none: " in out and "Best vs runner-up: " in out
    parent = parents[0].data
    assert parent.metrics["best_configuration"] == pytest.approx(best.interval.mean)
    # the verdict's comparison, its interval drawn at the family's level
    difference = verdict.best_vs_controls["none"].difference
    assert parent.metrics["best_vs_control/none"] == pytest.approx(difference.mean)
    assert parent.metrics["best_vs_control/none/low"] == pytest.approx(difference.low)
    assert parent.metrics["best_vs_control/none/n"] == 2
    assert "Best vs control none" in parent.tags["smsweep.verdict"]
    note = parent.tags[tracking.NOTE]  # the parent run's description in the MLflow UI
    assert note.startswith("### Verdict: miou (last validation)")
    assert "- Best vs control none: " in note and "| control none |  | 2 |" in note
    page = (tmp_path / "runs" / "tiny" / "report.html").read_text()
    assert "Configurations and controls" in page
    assert f"{100 * difference.mean:+.1f}" in page
    assert "Planning (80% power for the best against a control" in page
    assert "Where the noise is (over 6 trials of 2 fine-tunes)" in page
    assert parent.metrics["variance/finetune_sd"] > 0
    # the planner reads the same sweep directory
    assert main(["plan", str(tmp_path / "runs" / "tiny"), "--effect", "2", "5"]) == 0
    planned = capsys.readouterr().out.splitlines()
    assert planned[0].startswith("tiny: a paired difference of two arms has sd ")
    assert planned[1].startswith("  2.0 points: ") and planned[2].startswith("  5.0 points: ")
    assert "of device time" in planned[1]


def test_the_repeat_index_is_the_one_tune_sets():
    from ray.tune.search.repeater import TRIAL_INDEX as TUNES

    assert TRIAL_INDEX == TUNES


@pytest.mark.slow
def test_kill_9_and_resume_keep_the_race_and_the_confirmation_on_fresh_seeds(tmp_path):
    """The search (2 configurations and the control, 2 repeats each), a race up to 3 repeats,
    then the best and the control on 2 fresh seeds; the driver is killed after 7 trials and
    resumed."""
    search = {"confirm": {"top": 1, "repeats": 2}, "racing": {"max_repeats": 3, "first_test": 2}}
    spec = write_spec(tmp_path, _arm_sweep(**search))
    sweep = _start(["run", str(spec), "--storage", "runs"], tmp_path)
    _wait_for(sweep, "[7/13 done", timeout=600)  # the search, and the race or a confirmation
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    experiment = tmp_path / "runs" / "tiny"
    resumed = _start(["resume", str(experiment)], tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    parents, children = mlflow_runs(tmp_path)
    assert {run.info.status for run in children} == {"FINISHED"}
    names = {run.info.run_name for run in children}  # kept by the runs resume continued
    assert len(names) == len(children)
    assert {"control none · repeat 1/2", "control none · repeat 2/2"} <= names
    assert "### Verdict" in parents[0].data.tags[tracking.NOTE]  # written again when resume ends
    by_arm: dict[str, dict[int, float]] = {}
    phases: dict[str, dict[int, str]] = {}
    for run in children:
        tags = run.data.tags
        key, repeat = tags[CONFIGURATION], int(tags[REPEAT])
        assert repeat not in by_arm.get(key, {}), f"{key} ran repeat {repeat} twice"
        by_arm.setdefault(key, {})[repeat] = run.data.metrics["miou"]
        phases.setdefault(key, {})[repeat] = tags[PHASE]
        assert run.data.params["repeat"] == tags[REPEAT]
    searched = {  # the search and the race: the repeats that chose
        key: {r: v for r, v in values.items() if phases[key][r] == "search"}
        for key, values in by_arm.items()
    }
    raced = sorted(searched["control:none"]) == [0, 1, 2]  # the race ran its round
    assert sorted(searched["control:none"]) == [0, 1, 2][: 2 + raced]
    runs = [
        ArmRun(key, key, "none" if key.startswith("control") else None, repeat, value)
        for key, values in searched.items()
        for repeat, value in values.items()
    ]
    best = judge(runs, "miou").best.key
    fresh = [2 + raced, 3 + raced]  # never used by the search or the race
    for key in ("control:none", best):
        assert [r for r, phase in sorted(phases[key].items()) if phase == "confirm"] == fresh
    other = {"config-1": "config-2", "config-2": "config-1"}[best]
    assert "confirm" not in phases[other].values()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{experiment / 'optuna.db'}")
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.RUNNING not in states  # asked before the kill: closed
    told = sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    first_two = {key: statistics.fmean(by_arm[key][r] for r in (0, 1)) for key in by_arm}
    assert told == pytest.approx(sorted(first_two[key] for key in ("config-1", "config-2")))
    # the verdict comes from the fresh seeds, the search's estimate beside it
    metrics = parents[0].data.metrics
    confirmed = [by_arm[best][r] - by_arm["control:none"][r] for r in fresh]
    assert metrics["best_vs_control/none"] == pytest.approx(statistics.fmean(confirmed))
    assert metrics["best_vs_control/none/n"] == 2
    assert metrics["search/best_vs_control/none/n"] == 2 + raced
    assert f"Confirmed on 2 fresh seeds: {best}" in output
    assert "the confirmation, on fresh seeds (the verdict below):" in output


def _dashboard_studies(storage: str) -> str:
    """The study list that a real optuna-dashboard serves for `storage`."""
    port = free_port()
    command = [shutil.which("optuna-dashboard"), storage, "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/studies"
        return wait_until_answers(url, server, seconds=60).decode()
    finally:
        stop(server)
