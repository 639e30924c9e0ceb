"""Spec loading, overrides, resolution of trial params, and the search-space rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smsweep.errors import SpecError
from smsweep.spec.config import SweepSpec
from smsweep.spec.load import load_spec, resolve, validate_spec
from smsweep.spec.space import grid_points
from smsweep.trial.resources import check_fits, trial_demand

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quickstart.yaml", "paper.yaml"])
def test_shipped_specs_validate(name):
    spec = load_spec(REPO / "sweeps" / name)
    assert isinstance(spec, SweepSpec)


def test_paper_spec_has_smir_settings():
    spec = load_spec(REPO / "sweeps" / "paper.yaml")
    assert spec.model.encoder == "resnet34"
    assert spec.pretrain.partitions == 10
    assert spec.masking.ratio == 0.5 and spec.masking.samples == 5
    assert spec.masking.strategy == "selective" and spec.pretrain.loss == "msssim_l1"


def test_defaults_fill_an_empty_spec():
    spec = validate_spec({})
    assert spec.search.metric == "miou" and spec.data.skip_bad is False
    assert spec.tracking.mlflow_uri == "sqlite:///mlflow.db"
    assert spec.model.encoder_weights is None


def test_overrides_are_yaml_values_and_validated(tmp_path):
    spec = load_spec(
        REPO / "sweeps" / "quickstart.yaml",
        ["masking.ratio=0.6", "data.augment=false", "name=other"],
    )
    assert spec.masking.ratio == 0.6 and spec.data.augment is False and spec.name == "other"
    with pytest.raises(SpecError, match=r"masking\.ratio"):
        load_spec(REPO / "sweeps" / "quickstart.yaml", ["masking.ratio=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.precision=fp16",
            "`model.precision`: 'fp16' is not a valid choice; choose one of: auto, fp32, bf16",
        ),
        (
            "resources.pin_memory=maybe",
            "`resources.pin_memory`: 'maybe' is not a valid choice; "
            "choose one of: auto, true, false",
        ),
        (
            "resources.data_workers=-1",
            "`resources.data_workers`: input should be greater than "
            "or equal to 0 (got -1); legal: int >= 0 and <= 64",
        ),
        ("resources.data_worker=2", "did you mean `resources.data_workers`?"),
    ],
)
def test_precision_and_loading_keys_name_their_legal_values(override, message):
    with pytest.raises(SpecError) as error:
        load_spec(REPO / "sweeps" / "quickstart.yaml", [override])
    assert message in str(error.value) and f"--set {override}" in str(error.value)
    spec = load_spec(
        REPO / "sweeps" / "quickstart.yaml",
        ["model.precision=bf16", "resources.data_workers=2", "resources.pin_memory=false"],
    )
    assert spec.model.precision == "bf16" and spec.resources.data_workers == 2
    assert spec.resources.pin_memory is False and validate_spec({}).resources.pin_memory == "auto"


def test_spec_is_frozen():
    spec = validate_spec({})
    with pytest.raises(Exception, match="frozen"):
        spec.masking.ratio = 0.3  # type: ignore[misc]


def test_resolve_substitutes_trial_params_and_flat_names_them():
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml")
    trial = resolve(spec, {"masking.strategy": "selective", "masking.samples": 4})
    assert trial.masking.strategy == "selective" and trial.masking.samples == 4
    flat = trial.flat()
    assert flat["masking.strategy"] == "selective" and flat["masking.mixed.ratio"] == 0.5
    assert not any(key.startswith("search.") for key in flat)
    assert validate_spec(yaml.safe_load(trial.to_yaml())) == trial


def test_conditional_parameter_is_checked_with_its_condition_active():
    # mixed.patch_size only matters (and is only cross-checked) when strategy is mixed
    raw = {
        "masking": {"strategy": "random"},
        "search": {
            "space": {
                "masking.strategy": {"choice": ["random", "mixed"]},
                "masking.mixed.patch_size": {
                    "choice": [8, 24],
                    "when": {"masking.strategy": ["mixed"]},
                },
            }
        },
    }
    with pytest.raises(SpecError, match="value 24"):
        validate_spec(raw)


def test_combinations_of_searched_keys_are_checked():
    raw = {
        "search": {
            "space": {
                "data.image_size": {"choice": [32, 64]},
                "masking.patch_size": {"choice": [8, 32, 64]},
            }
        }
    }
    with pytest.raises(SpecError, match="combination"):
        validate_spec(raw)


def test_when_values_must_be_possible():
    raw = {
        "search": {
            "space": {
                "masking.strategy": {"choice": ["random", "selective"]},
                "masking.samples": {"randint": [1, 5], "when": {"masking.strategy": ["saliency"]}},
            }
        }
    }
    with pytest.raises(SpecError, match="can never occur"):
        validate_spec(raw)


def test_randint_is_inclusive_and_enumerated():
    raw = {"search": {"space": {"masking.samples": {"randint": [1, 65]}}}}
    with pytest.raises(SpecError, match="value 65"):
        validate_spec(raw)


def test_trial_demand_and_fit_check_name_the_numbers():
    spec = validate_spec(
        {
            "resources": {"cpus_per_trial": 1, "train_workers": 1, "scoring_actors": 0},
            "search": {"max_concurrent": 2},
        }
    )
    demand = trial_demand(spec.resources)
    assert demand.cpus == 2
    # the measured deadlock: 2 trials x (1 + 1) on a 2-CPU node must be refused
    with pytest.raises(SpecError, match=r"2 concurrent trials x .* = 4 CPU.*max_concurrent: 1"):
        check_fits(spec, cpus=2, gpus=0, where="this machine")
    assert check_fits(spec, cpus=4, gpus=0, where="this machine") == 2


def test_gpu_demand_must_fit():
    spec = validate_spec({"resources": {"gpus_per_trial": 1}})
    with pytest.raises(SpecError, match="0 GPU"):
        check_fits(spec, cpus=8, gpus=0, where="this machine")


def test_define_by_run_sampling_respects_when_conditions():
    import optuna

    from smsweep.spec.space import sample

    spec = validate_spec(
        {
            "search": {
                "space": {
                    "masking.samples": {
                        "randint": [1, 5],
                        "when": {"masking.strategy": ["selective"]},
                    },
                    "masking.strategy": {"choice": ["random", "selective"]},
                    "masking.ratio": {"uniform": [0.4, 0.6]},
                }
            }
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [sample(study.ask(), spec.search.space, spec.flat()) for _ in range(40)]
    for params in drawn:
        assert 0.4 <= params["masking.ratio"] <= 0.6
        assert ("masking.samples" in params) == (params["masking.strategy"] == "selective")
        if "masking.samples" in params:
            assert 1 <= params["masking.samples"] <= 5
    assert {p["masking.strategy"] for p in drawn} == {"random", "selective"}


def test_cyclic_when_conditions_are_refused():
    with pytest.raises(SpecError, match="form a cycle"):
        validate_spec(
            {
                "search": {
                    "space": {
                        "masking.strategy": {
                            "choice": ["random", "selective"],
                            "when": {"masking.fill": ["mean"]},
                        },
                        "masking.fill": {
                            "choice": ["mean", "zero"],
                            "when": {"masking.strategy": ["selective"]},
                        },
                    }
                }
            }
        )


def test_grid_sampler_needs_choices_and_the_grid_size():
    space = {"masking.ratio": {"choice": [0.4, 0.5]}, "masking.patch_size": {"choice": [4, 8]}}
    spec = validate_spec({"search": {"sampler": "grid", "num_samples": 4, "space": space}})
    assert spec.search.sampler == "grid"
    with pytest.raises(SpecError, match=r"set search\.num_samples: 4"):
        validate_spec({"search": {"sampler": "grid", "num_samples": 6, "space": space}})
    ranged = {"masking.ratio": {"uniform": [0.4, 0.6]}}
    with pytest.raises(SpecError, match="to be a `choice`"):
        validate_spec({"search": {"sampler": "grid", "num_samples": 1, "space": ranged}})


def test_a_grid_with_when_runs_each_distinct_arm_once():
    # strategy x refresh, with refresh searched only for random: none, random/batch,
    # random/partition, selective -> 4 distinct trials, not 3 x 2
    space = {
        "masking.strategy": {"choice": ["none", "random", "selective"]},
        "masking.refresh": {
            "choice": ["batch", "partition"],
            "when": {"masking.strategy": ["random"]},
        },
    }
    spec = validate_spec({"search": {"sampler": "grid", "num_samples": 4, "space": space}})
    assert grid_points(spec.search.space, spec.flat()) == [
        {"masking.strategy": "none"},
        {"masking.strategy": "random", "masking.refresh": "batch"},
        {"masking.strategy": "random", "masking.refresh": "partition"},
        {"masking.strategy": "selective"},
    ]
    with pytest.raises(SpecError, match=r"4 distinct combinations.*num_samples: 4"):
        validate_spec({"search": {"sampler": "grid", "num_samples": 6, "space": space}})
