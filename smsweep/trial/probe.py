"""`finetune.probe`: beside the fine-tune, a frozen-encoder probe of the same pretrained weights
(the decoder and head train, the encoder stays as pretraining left it), validated at every one of
the fine-tune's validations and reported as `probe/<metric>` (`probe/miou`, `probe/iou/<class>`,
`probe/finetune_loss`). One trial then measures both protocols: the fine-tune's score (what a
user of the weights gets) and the probe's (what pretraining put in the encoder, steadier), and
either can be `search.metric`.

The probe has its own model, optimizer, seeds (`PROBE_RUN`) and torch RNG state, swapped in
around its steps, so the fine-tune trains and reports exactly as without the probe. Its state
travels in the checkpoint (`TrialState.probe`), so a resumed trial's probe goes on where it was.
Its cost: the fine-tuning steps again, less the encoder's backward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from smsweep.method import build
from smsweep.method.finetune import freeze_encoder, transfer_weights
from smsweep.method.schedule import optimization
from smsweep.spec.names import PROBE_PREFIX
from smsweep.trial.context import HEAD
from smsweep.trial.repeats import PROBE_RUN, Parked, finetune_seed, on_cpu

if TYPE_CHECKING:
    from smsweep.method.data.datasets import SegmentationDataset
    from smsweep.method.segloss import SegmentationLoss
    from smsweep.trial.context import TrialContext


class Finetuning(Protocol):
    """What the probe takes from the fine-tuning phase (`finetuning.Finetuning`): its trial,
    session, train split, steps and validation, so the probe trains as the fine-tune does."""

    trial: TrialContext
    session: Any  # prepare(model) -> the model to train

    def train_split(self, finetune: int) -> SegmentationDataset: ...

    def steps(
        self, model: nn.Module, train: SegmentationDataset, *args: Any, **kw: Any
    ) -> float: ...

    def validate(
        self, segmentation: nn.Module, frozen: nn.Module | None
    ) -> tuple[dict[str, Any], torch.Tensor]: ...


class Probe:
    """The probe of one trial: built from `pretrained` (None: from random weights, as the
    control `none` is), or resumed from its `parked` state."""

    def __init__(
        self,
        finetuning: Finetuning,
        pretrained: dict[str, torch.Tensor] | None,
        parked: Parked | None,
    ) -> None:
        trial = finetuning.trial
        self.finetuning = finetuning
        outer = torch.get_rng_state()
        torch.manual_seed(finetune_seed(trial, HEAD, finetune=PROBE_RUN))
        self.model = build.segmentation_model(trial.spec)  # a plain U-Net, with MRM too
        if pretrained is not None:
            transfer_weights(pretrained, self.model)
        self.encoder = freeze_encoder(self.model)
        self.model.to(trial.device)
        budget = trial.budget
        self.optimizer, self.learning_rate = optimization(
            self.model, trial.spec.finetune, budget.finetune_steps
        )
        self.rng = torch.get_rng_state()
        if parked is not None:
            self.model.load_state_dict(parked["model"])
            self.optimizer.load_state_dict(parked["optimizer"])
            self.rng = parked["torch_rng"]
        torch.set_rng_state(outer)
        self.trained = finetuning.session.prepare(self.model)
        self.train = finetuning.train_split(PROBE_RUN)

    def advance(self, done: int, steps: int, criterion: SegmentationLoss) -> dict[str, Any]:
        """The probe's `steps` steps after `done`, then its validation, as `probe/` metrics."""
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        loss = self.finetuning.steps(
            self.trained,
            self.train,
            self.optimizer,
            self.learning_rate,
            done,
            steps,
            criterion=criterion,
            frozen=self.encoder,
            finetune=PROBE_RUN,
        )
        validation, _ = self.finetuning.validate(self.model, self.encoder)
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer)
        return {f"{PROBE_PREFIX}finetune_loss": loss} | {
            f"{PROBE_PREFIX}{key}": value for key, value in validation.items()
        }

    def checkpointed(self) -> Parked:
        """The probe's state for the checkpoint."""
        return {
            "model": on_cpu(self.model.state_dict()),
            "optimizer": on_cpu(self.optimizer.state_dict()),
            "torch_rng": self.rng,
        }
