"""A masking strategy of one's own: one class and one registry entry, here in this file alone.

The spec names this module under `plugins`; every process of the sweep (the driver, the trial's
process) imports it and registers `MASKING_STRATEGIES` before it reads the spec. The strategy
then validates, is listed in the generated spec reference, trains, and runs in a real sweep.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from smsweep.engines.trainloop import run_in_process
from smsweep.errors import SpecError
from smsweep.method import build
from smsweep.method.masking import MaskingStrategy, patch_grid
from smsweep.spec import registry
from smsweep.spec.load import validate_spec
from smsweep.spec.reference import reference_markdown
from smsweep.spec.registry import StrategyEntry
from tests.test_sweep import REPO, mlflow_runs, tiny_sweep, write_spec
from tests.test_trial import tiny_spec


class TopRowsMasking(MaskingStrategy):
    """Masks the top rows of patches first (ties broken by noise): a strategy no paper has."""

    name = "top_rows"

    def scores(
        self, images: Tensor, generator: torch.Generator, model: nn.Module | None = None
    ) -> Tensor:
        height, width = patch_grid(images, self.patch_size)
        rows = torch.arange(height, 0, -1, dtype=torch.float32).repeat_interleave(width)
        noise = torch.rand(images.shape[0], height * width, generator=generator) * 0.5
        return (rows + noise).view(images.shape[0], height, width).to(images.device)


MASKING_STRATEGIES = [StrategyEntry("top_rows", TopRowsMasking, "the top rows of patches first")]
PLUGIN = {"plugins": [__name__], "masking": {"strategy": "top_rows", "ratio": 0.25}}


@pytest.fixture
def plugin():
    yield
    registry.STRATEGIES.pop("top_rows", None)  # other tests see the package's strategies only


def test_an_unknown_strategy_names_the_registered_ones_and_plugins():
    with pytest.raises(SpecError, match="choose one of: none, random, block, selective"):
        validate_spec({"masking": {"strategy": "top_rows"}})


def test_a_module_without_entries_is_refused():
    with pytest.raises(SpecError, match="no MASKING_STRATEGIES list"):
        validate_spec({"plugins": ["tests.test_trial"]})


def test_a_plugin_strategy_validates_is_documented_and_builds(plugin):
    spec = validate_spec(PLUGIN)
    assert spec.masking.strategy == "top_rows"
    assert "`top_rows`" in reference_markdown()
    assert "| `top_rows` | the top rows of patches first | no |" in reference_markdown()
    strategy = build.masking_strategy(spec)
    assert isinstance(strategy, TopRowsMasking) and not strategy.needs_model
    mask = strategy(torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0))
    assert mask.grid[:, 0].all() and not mask.grid[:, -1].any()  # top rows first, 4 of 16


def test_what_an_entry_says_it_can_do_is_checked(plugin):
    entry = StrategyEntry("top_rows_r", TopRowsMasking, "x", objectives=("reconstruction",))
    MASKING_STRATEGIES.append(entry)
    try:
        contrastive = {**PLUGIN, "pretrain": {"objective": "contrastive"}}
        contrastive["masking"] = {"strategy": "top_rows_r"}
        with pytest.raises(SpecError, match=r"top_rows_r cannot mask for pretrain\.objective"):
            validate_spec(contrastive)
    finally:
        MASKING_STRATEGIES.remove(entry)
        registry.STRATEGIES.pop("top_rows_r", None)


def test_a_plugin_strategy_trains_a_tiny_trial(plugin, tmp_path):
    tiny = tiny_spec(resources={"scoring_actors": 0, "train_workers": 0})
    raw = tiny.model_dump(mode="json") | {"plugins": [__name__]}
    raw["masking"] |= {"strategy": "top_rows", "ratio": 0.25}
    spec = validate_spec(raw)
    reports = [r.flat() for r in run_in_process(spec, tmp_path)]
    assert reports[-1]["done"] and 0.0 <= reports[-1]["miou"] <= 1.0
    assert all(r["recon_loss"] > 0 for r in reports if r["phase"] == "pretrain")


@pytest.mark.slow
def test_a_plugin_strategy_runs_in_a_real_sweep(plugin, tmp_path, monkeypatch):
    """The trial's process is a Ray worker: it imports the plugin from the spec itself."""
    from smsweep.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import `tests.test_registry`
    raw = tiny_sweep(1, in_process=True, space={})
    raw |= {"plugins": ["tests.test_registry"]}  # as the workers import it
    raw["masking"] |= {"strategy": "top_rows", "ratio": 0.25}
    raw["resources"] |= {"scoring_actors": 0}
    assert main(["run", str(write_spec(tmp_path, raw)), "--storage", "runs"]) == 0
    _, children = mlflow_runs(tmp_path)
    assert [run.data.params["masking.strategy"] for run in children] == ["top_rows"]
    assert children[0].info.status == "FINISHED" and "miou" in children[0].data.metrics
