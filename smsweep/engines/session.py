"""Where a trial's training loop runs: inside a Ray Train worker, or in the caller's process.

`trainloop.Trial` needs five things from its surroundings: its rank and the world size, its
device, the checkpoint to resume from, a way to wrap the model for data parallelism, and a way to
report metrics with a checkpoint directory. `RayTrainSession` takes them from Ray Train (the
sweep's path: one `TorchTrainer.fit` per trial); `LocalSession` provides them in-process (one
worker, checkpoints in a directory or an object store), for scripts, studies of the loop
itself, and machines without Ray.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from smsweep.engines.store import Location

CHECKPOINT_PREFIX = "checkpoint_"


class Session(Protocol):
    rank: int
    world: int
    device: torch.device

    def restored(self) -> contextlib.AbstractContextManager[Path | None]:
        """The directory of the checkpoint to resume from (None: start fresh), while in use."""
        ...

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model to train (DDP-wrapped when world > 1); the bare model keeps its weights."""
        ...

    def report(self, metrics: dict[str, Any], directory: Path | None) -> None:
        """Metrics of a partition or epoch, with the checkpoint written to `directory` (rank 0)
        or none; the directory is the caller's and may be deleted once this returns."""
        ...


class RayTrainSession:
    """The loop inside a Ray Train worker (`TorchTrainer.fit`)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory)

    def prepare(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], directory: Path | None) -> None:
        import ray.train

        checkpoint = None if directory is None else ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


class LocalSession:
    """The loop in this process: one worker on `device`, checkpoints under `directory` (local
    or in an object store, see `store`) as `checkpoint_000000`, `checkpoint_000001`, ... (the
    newest `keep` are kept), each put there whole (`Location.put_directory`), so a kill never
    leaves half a checkpoint behind. `on_report(metrics, checkpoint or None)` sees every
    report."""

    rank, world = 0, 1

    def __init__(
        self,
        directory: str | Path | Location,
        *,
        device: torch.device | str | None = None,
        on_report: Callable[[dict[str, Any], Location | None], None] | None = None,
        keep: int = 2,
    ) -> None:
        self.directory = Location.of(directory)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.on_report = on_report
        self.keep = keep

    def checkpoints(self) -> list[Location]:
        """The complete checkpoints, oldest first."""
        return self.directory.complete_directories(f"{CHECKPOINT_PREFIX}*")

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        checkpoints = self.checkpoints()
        if not checkpoints:
            yield None
            return
        with checkpoints[-1].local_directory() as directory:
            yield directory

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def report(self, metrics: dict[str, Any], directory: Path | None) -> None:
        saved = None
        if directory is not None:
            existing = self.checkpoints()
            number = int(existing[-1].name.removeprefix(CHECKPOINT_PREFIX)) + 1 if existing else 0
            saved = self.directory / f"{CHECKPOINT_PREFIX}{number:06d}"
            saved.put_directory(Path(directory))
            for old in self.checkpoints()[: -self.keep]:
                old.remove_tree()
        if self.on_report is not None:
            self.on_report(metrics, saved)
