"""The Ray Train loop of one trial: every pretraining partition, then fine-tuning, in one fit.

A `TorchTrainer.fit` costs ~15 s of fixed overhead on a small machine, so one fit runs the whole
trial. Each partition and each fine-tune epoch ends with `ray.train.report` and a checkpoint
(model, optimizer, where the trial is, compute seconds, RNG state, resolved spec, tracking run
ids); a restarted fit resumes after the last one. Every random draw is seeded from (spec.seed,
purpose, partition, epoch), so a resumed trial draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from smsweep import build
from smsweep.config import SweepSpec
from smsweep.data import Source, Splits, make_splits
from smsweep.data.datasets import PretrainDataset, SegmentationDataset
from smsweep.data.transforms import eval_transform, finetune_transform, pretrain_transform
from smsweep.faults import pause_for_a_kill, poisoned
from smsweep.finetune import (
    confusion_matrix,
    finetune_epoch,
    segmentation_metrics,
    transfer_weights,
)
from smsweep.gallery import gallery_rows, save_gallery
from smsweep.masking import mask_diagnostics
from smsweep.pretrain import MaskTable, derived_seed, per_batch_masks, train_partition
from smsweep.scoring import ActorScorer, load_images, score_in_process

STATE_FILE, META_FILE = "state.pt", "meta.json"
GALLERY_IMAGES = 4  # rows in a partition's gallery
DIAGNOSTIC_IMAGES = 32  # labelled images of a partition the mechanism diagnostics look at
# Streams of derived_seed: one per purpose, so changing one never shifts another.
INIT, MASKS, SHUFFLE, SCORING, HEAD, FINETUNE, FINETUNE_SHUFFLE = range(7)


class InjectedFault(RuntimeError):
    """Raised by the test-only fault `raise_after_partition`."""


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point. config: spec (dict), source, run_ids, faults (test-only)."""
    Trial(config).run()


class Trial:
    def __init__(self, config: dict[str, Any]) -> None:
        self.spec = SweepSpec.model_validate(config["spec"])
        self.source: Source = config["source"]
        self.run_ids: dict[str, str] = dict(config.get("run_ids") or {})
        # Test-only fault injection (README, "What survives what"): raise_after_partition (first
        # attempt only), nan_at_partition, pause_at (+ marker), actor_exit_after_blocks.
        self.faults: dict[str, Any] = dict(config.get("faults") or {})
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        data, pretrain = self.spec.data, self.spec.pretrain
        self.splits: Splits = make_splits(
            self.source,
            seed=self.spec.seed,
            partitions=pretrain.partitions,
            val_fraction=data.val_fraction,
            label_fraction=data.label_fraction,
        )
        self.state = self._restore(ray.train.get_checkpoint())
        self.first_attempt = self.state is None
        self.compute_seconds = self.state["compute_seconds"] if self.state else 0.0
        self.started = time.perf_counter()

    # --- the trial ------------------------------------------------------------------------------

    def run(self) -> None:
        pretrained = None
        if self.spec.masking.strategy != "none" and self._phase() == "pretrain":
            pretrained = self.pretrain()
        self.finetune(pretrained)

    def pretrain(self) -> dict[str, torch.Tensor]:
        spec = self.spec
        torch.manual_seed(derived_seed(spec.seed, INIT))
        model = build.reconstruction_model(spec).to(self.device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=spec.pretrain.lr, weight_decay=spec.pretrain.weight_decay
        )
        first = 0
        if self.state is not None:
            model.load_state_dict(self.state["model"])
            optimizer.load_state_dict(self.state["optimizer"])
            first = self.state["partition"] + 1
        trained = ray.train.torch.prepare_model(model)  # DDP when world > 1; `model` stays bare
        fill, loss = build.input_fill(spec), build.pretrain_loss(spec)
        strategy, warmup = build.masking_strategy(spec), build.warmup_strategy(spec)
        scorer = None
        scores_later = strategy.needs_model and max(first, 1) < spec.pretrain.partitions
        if self.rank == 0 and spec.resources.scoring_actors and scores_later:
            scorer = ActorScorer(  # the actors start while partition 0 trains
                spec,
                self.source,
                exit_after_blocks=self.faults.get("actor_exit_after_blocks"),
                faults=self.faults,
            )
        try:
            for partition in range(first, spec.pretrain.partitions):
                indices = self.splits.pretrain_partitions[partition]
                metrics: dict[str, Any] = {"phase": "pretrain", "partition": partition}
                if partition == 0 or not strategy.needs_model:
                    masks = per_batch_masks(warmup if partition == 0 else strategy)
                else:
                    masks, scoring = self._scored_masks(strategy, model, indices, scorer)
                    metrics |= scoring
                gallery = self._look(model, fill, indices, masks, partition, metrics)
                pause_for_a_kill(self.faults, f"pretrain:{partition}")
                batches = self._pretrain_batches(indices, partition)
                if partition == self.faults.get("nan_at_partition"):
                    batches = poisoned(batches)
                metrics["recon_loss"] = train_partition(
                    trained,
                    batches,
                    masks,
                    epochs=spec.pretrain.epochs_per_partition,
                    fill=fill,
                    loss=loss,
                    optimizer=optimizer,
                    mask_seed=lambda epoch, p=partition: derived_seed(spec.seed, MASKS, p, epoch),
                )
                state = {"phase": "pretrain", "partition": partition, "epoch": -1}
                self._report(metrics, state, model, optimizer, gallery)
                if partition == self.faults.get("raise_after_partition") and self.first_attempt:
                    raise InjectedFault(f"test-only fault: raise_after_partition={partition}")
        finally:
            if scorer is not None:
                scorer.close()
        return {key: value.detach().cpu() for key, value in model.state_dict().items()}

    def finetune(self, pretrained: dict[str, torch.Tensor] | None) -> None:
        spec = self.spec
        torch.manual_seed(derived_seed(spec.seed, HEAD))
        model = build.segmentation_model(spec)
        transfer = "no pretraining" if spec.masking.strategy == "none" else None
        if pretrained is not None:
            transfer = transfer_weights(pretrained, model).summary()
        model.to(self.device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=spec.finetune.lr, weight_decay=spec.finetune.weight_decay
        )
        first = 0
        if self.state is not None and self.state["phase"] == "finetune":
            model.load_state_dict(self.state["model"])
            optimizer.load_state_dict(self.state["optimizer"])
            first = self.state["epoch"] + 1
        trained = ray.train.torch.prepare_model(model)
        train = SegmentationDataset(
            self.source,
            _shard(self.splits.train, self.rank, self.world),
            finetune_transform(spec.data.image_size, train=True, augment=spec.data.augment),
            seed=derived_seed(spec.seed, FINETUNE),
        )
        val = SegmentationDataset(
            self.source, self.splits.val, eval_transform(spec.data.image_size)
        )
        for epoch in range(first, spec.finetune.epochs):
            pause_for_a_kill(self.faults, f"finetune:{epoch}")
            train.set_epoch(epoch)
            seed = derived_seed(spec.seed, FINETUNE_SHUFFLE, epoch)
            shuffle = torch.Generator().manual_seed(seed)
            loader = DataLoader(
                train, batch_size=spec.finetune.batch_size, shuffle=True, generator=shuffle
            )
            metrics: dict[str, Any] = {"phase": "finetune", "epoch": epoch}
            metrics["finetune_loss"] = finetune_epoch(trained, self._on_device(loader), optimizer)
            confusion = confusion_matrix(
                model,
                self._on_device(DataLoader(val, batch_size=spec.finetune.batch_size)),
                spec.data.num_classes,
            )
            metrics |= segmentation_metrics(confusion, self.source.class_names)
            if transfer is not None:
                metrics["transfer"] = transfer
            metrics["done"] = epoch == spec.finetune.epochs - 1
            state = {"phase": "finetune", "partition": -1, "epoch": epoch}
            self._report(metrics, state, model, optimizer)

    # --- masks ----------------------------------------------------------------------------------

    def _scored_masks(self, strategy, model, indices, scorer) -> tuple[Any, dict[str, float]]:
        """Masks of a partition from the model after the previous one; rank 0 scores, all get
        the table."""
        table, scoring = None, {}
        if self.rank == 0:
            seeds = [derived_seed(self.spec.seed, SCORING, i) for i in indices]
            if scorer is not None:
                scored = scorer.score(model.state_dict(), indices, seeds)
            else:
                scored = score_in_process(
                    strategy, model, self.source, indices, seeds, self.spec.data.image_size
                )
            table = MaskTable.from_scores(
                indices, scored.scores, strategy.ratio, strategy.patch_size
            )
            scoring = {
                "scoring_seconds": scored.seconds,
                "scored_by_actors": int(scored.by_actors),
                "scoring_actor_restarts": scored.actor_restarts,
                "scoring_ms_per_image": 1000 * scored.seconds / len(indices),
            }
        if self.world > 1:
            shared = [table]
            dist.broadcast_object_list(shared, src=0)
            table = shared[0]
        return table, scoring

    def _look(self, model, fill, indices, masks, partition, metrics) -> Path | None:
        """Rank 0: mechanism diagnostics and the gallery, for the model and masks of this
        partition as training on it begins."""
        if self.rank != 0:
            return None
        generator = torch.Generator().manual_seed(derived_seed(self.spec.seed, MASKS, partition))
        labelled = [i for i in indices if self.source.has_mask(i)][:DIAGNOSTIC_IMAGES]
        if labelled:
            images, labels = self._labelled_view(labelled)
            mask = masks(images, torch.tensor(labelled), generator)
            diagnostics = mask_diagnostics(labels, mask)
            names = self.source.class_names
            for key, value in diagnostics.items():
                kind, _, class_id = key.partition("/")
                metrics[f"diag/{kind}/{names[int(class_id)]}" if class_id else f"diag/{kind}"] = (
                    value
                )
        shown = list(indices[:GALLERY_IMAGES])
        images = load_images(self.source, shown, self.spec.data.image_size).to(self.device)
        rows = gallery_rows(
            model, images, masks(images, torch.tensor(shown), generator), fill, generator
        )
        return save_gallery(rows, Path(tempfile.mkdtemp()) / f"partition_{partition:03d}.png")

    def _labelled_view(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and masks through the same fixed pretraining crop."""
        view = SegmentationDataset(
            self.source, indices, pretrain_transform(self.spec.data.image_size, augment=False)
        )
        images, labels = zip(*(view[k] for k in range(len(view))), strict=True)
        return torch.stack(images).to(self.device), torch.stack(labels).to(self.device)

    # --- data -----------------------------------------------------------------------------------

    def _pretrain_batches(self, indices, partition):
        dataset = PretrainDataset(
            self.source,
            _shard(indices, self.rank, self.world),
            pretrain_transform(self.spec.data.image_size, augment=False),
        )

        def batches(epoch: int):
            seed = derived_seed(self.spec.seed, SHUFFLE, partition, epoch)
            loader = DataLoader(
                dataset,
                batch_size=self.spec.pretrain.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
            )
            return self._on_device(loader)

        return batches

    def _on_device(self, loader: DataLoader):
        for first, second in loader:
            yield first.to(self.device), second.to(self.device)

    # --- checkpoints ----------------------------------------------------------------------------

    def _phase(self) -> str:
        return self.state["phase"] if self.state is not None else "pretrain"

    def _report(self, metrics, where, model, optimizer, gallery: Path | None = None) -> None:
        now = time.perf_counter()
        self.compute_seconds += now - self.started
        self.started = now
        metrics["compute_seconds"] = self.compute_seconds
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        state = {
            **where,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "compute_seconds": self.compute_seconds,
            "torch_rng": torch.get_rng_state(),
            "spec": self.spec.to_yaml(),
            "run_ids": self.run_ids,
        }
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            torch.save(state, root / STATE_FILE)
            meta = {
                **where,
                "compute_seconds": self.compute_seconds,
                "run_ids": self.run_ids,
                "metrics": metrics,  # the last one tells a restarted trial that it is done
            }
            (root / META_FILE).write_text(json.dumps(meta))
            if gallery is not None:
                (root / gallery.name).write_bytes(gallery.read_bytes())
                gallery.unlink()
                gallery.parent.rmdir()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def _restore(self, checkpoint: ray.train.Checkpoint | None) -> dict[str, Any] | None:
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        if state["spec"] != self.spec.to_yaml():
            raise ValueError(
                f"checkpoint {checkpoint.path} was written for a different trial config; "
                "resume with the spec it was written with, or start a new run name"
            )
        torch.set_rng_state(state["torch_rng"])
        self.run_ids = state["run_ids"] or self.run_ids
        return state


def _shard(indices, rank: int, world: int) -> tuple[int, ...]:
    """Rank `rank`'s equal share (wrapping around when needed: DDP needs equal step counts)."""
    indices = tuple(indices)
    if world == 1:
        return indices
    per_rank = -(-len(indices) // world)
    padded = (indices * world)[: per_rank * world]
    return padded[rank::world]
