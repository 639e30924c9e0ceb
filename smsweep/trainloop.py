"""The training loop of one trial: every pretraining partition, then fine-tuning.

In a sweep it runs in a Ray Train worker (a `TorchTrainer.fit` costs ~15 s of fixed overhead on
a small machine, so one fit runs the whole trial); `session.LocalSession` runs it in-process.
Each partition and each fine-tune epoch ends with a report and a checkpoint (model, optimizer,
where the trial is, compute seconds, RNG state, resolved spec, tracking run ids); a restarted
trial resumes after the last one. Budgets are optimizer steps (`budget.trial_budget`) and the
learning rate is a function of the step (`schedule`), so a resumed trial trains exactly as an
uninterrupted one. Every random draw is seeded from (seed, purpose, partition, epoch[, image]),
so a resumed trial draws exactly what an uninterrupted one would. The data split and the
partitions follow spec.seed; the draws follow the trial's repeat seed (`repeat_seed`), which is
spec.seed itself for repeat 0.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from smsweep import build, faults, integrity, looks, mrm, partition0, robustness
from smsweep.budget import trial_budget
from smsweep.config import ResourcesConfig, SweepSpec
from smsweep.contrastive import Contrastive, frozen_saliency, train_partition_contrastive
from smsweep.data import Source, Splits
from smsweep.data.datasets import PretrainDataset, SegmentationDataset
from smsweep.data.pretraining import open_pretrain_source, trial_splits
from smsweep.data.transforms import eval_transform, finetune_transform, pretrain_transform
from smsweep.finetune import (
    confusion_matrix,
    finetune_epoch,
    label_counts,
    recalibrate_batchnorm,
    segmentation_metrics,
    step_batches,
    transfer_weights,
    trivial_metrics,
)
from smsweep.models import load_encoder_weights
from smsweep.precision import resolve_precision
from smsweep.pretrain import (
    MaskTable,
    derived_seed,
    drawn_once,
    per_batch_masks,
    train_partition,
)
from smsweep.reports import Recorder, TrialReport
from smsweep.resources import trial_cost
from smsweep.schedule import LearningRate
from smsweep.scoring import ActorScorer, score_in_process
from smsweep.session import RayTrainSession, Session

if TYPE_CHECKING:
    from smsweep.tracking import TrialTracking

STATE_FILE, META_FILE = "state.pt", "meta.json"
# The loss a pretraining partition reports, per pretrain.objective.
LOSS_KEYS = {"reconstruction": "recon_loss", "contrastive": "contrastive_loss"}
# Streams of derived_seed: one per purpose, so changing one never shifts another.
INIT, MASKS, SHUFFLE, SCORING, HEAD, FINETUNE, FINETUNE_SHUFFLE, FIXED_MASKS, REPEAT = range(9)


def repeat_seed(spec: SweepSpec) -> int:
    """The seed of the trial's weights, masks and fine-tuning: spec.seed for repeat 0 (a sweep
    without repeats trains as before), a seed derived from (spec.seed, repeat) otherwise."""
    return spec.seed if spec.repeat == 0 else derived_seed(spec.seed, REPEAT, spec.repeat)


def train_loop(config: dict[str, Any]) -> list[TrialReport]:
    """Ray Train entry point (config: see `Trial`); returns rank 0's reports of this attempt."""
    return Trial(config, RayTrainSession()).run()


def run_in_process(
    spec: SweepSpec,
    directory: str | Path,
    *,
    source: Source | None = None,
    pretrain_source: Source | None = None,
    device: str | None = None,
    partition0_cache: str | Path | None = None,
) -> list[TrialReport]:
    """The whole trial in this process (no Ray): checkpoints under `directory`; returns this
    attempt's reports. Calling it again resumes after the last checkpoint. `pretrain_source`
    stands for pretrain.data (cross-pretraining). Scoring runs in-process: set
    `resources.scoring_actors: 0`. With `partition0_cache` (a folder), partition 0 comes from
    there when another trial stored it."""
    from smsweep.data import open_source
    from smsweep.session import LocalSession

    if spec.resources.scoring_actors:
        raise ValueError("in-process trials score in-process: set resources.scoring_actors: 0")
    config = {
        "spec": spec.model_dump(mode="json"),
        "source": source if source is not None else open_source(spec.data, seed=spec.seed),
        "partition0_cache": str(partition0_cache) if partition0_cache else None,
        "pretrain_source": pretrain_source,
        "run_dir": str(directory),
    }
    return Trial(config, LocalSession(directory, device=device)).run()


class Trial:
    """One trial's training loop. config: spec (a dict), source, run_dir (the Train run, where
    rank 0 puts galleries and the result), tracking (the trial's MLflow run or None),
    partition0_cache, started_at, and pretrain_source (a Source for pretrain.data) or none."""

    def __init__(self, config: dict[str, Any], session: Session) -> None:
        self.spec = SweepSpec.model_validate(config["spec"])
        self.source: Source = config["source"]
        # What pretrains: the fine-tuning source itself, or pretrain.data (cross-pretraining).
        cross = config.get("pretrain_source")
        cross = cross if cross is not None else open_pretrain_source(self.spec)
        self.pretrain_source: Source = cross if cross is not None else self.source
        tracking: TrialTracking | None = config.get("tracking")
        # the trial's runs, kept in its checkpoints (which run a checkpoint belongs to)
        self.run_ids = (
            {"sweep": tracking.sweep_run_id, "trial": tracking.run_id} if tracking else {}
        )
        self.partition0_cache = config.get("partition0_cache")
        self.session = session
        self.seed = repeat_seed(self.spec)
        self.rank, self.world, self.device = session.rank, session.world, session.device
        self.recorder = Recorder(config.get("run_dir"), tracking) if self.rank == 0 else None
        model = self.spec.model
        self.precision = resolve_precision(
            model.precision, self.device, channels_last=model.channels_last
        )
        self.loading = loader_settings(self.spec.resources, self.device)
        self.splits: Splits = trial_splits(self.spec, self.source, cross)
        self.budget = trial_budget(self.spec, self.splits, workers=self.world)
        with session.restored() as directory:
            self.state = self._restore(directory)
        self.first_attempt = self.state is None
        self.compute_seconds = self.state["compute_seconds"] if self.state else 0.0
        self.scoring_seconds = self.state.get("scoring_seconds", 0.0) if self.state else 0.0
        self.saved_seconds = self.state.get("saved_seconds", 0.0) if self.state else 0.0
        self.partition0 = None  # the cache entry of this trial's partition 0 (`pretrain`)
        if self.partition0_cache and self.world == 1:  # DDP: every rank has its own RNG state
            self.partition0 = partition0.CachedPartition(
                self.partition0_cache, self.spec, self.seed, str(self.precision), self.device.type
            )
        self.started = time.perf_counter()
        # when this attempt began, in the trial's process (a Train worker starts seconds later)
        self.attempt_started = float(config.get("started_at") or time.time())

    # --- the trial ------------------------------------------------------------------------------

    def run(self) -> list[TrialReport]:
        """Train what is left of the trial; rank 0's reports of this attempt (others: [])."""
        if self.state is not None and self.last_report.get("done"):
            # Finished, but killed before the trial's result file was written: report it again
            # (replayed: MLflow has it already).
            self._send(TrialReport.of(self.last_report).again(), None)
            return self.recorder.reports if self.recorder else []
        pretrained = None
        if self.spec.masking.strategy != "none" and self._phase() == "pretrain":
            pretrained = self.pretrain()
        self.finetune(pretrained)
        return self.recorder.reports if self.recorder else []

    def pretrain(self) -> dict[str, torch.Tensor]:
        spec, budget = self.spec, self.budget
        contrastive = spec.pretrain.objective == "contrastive"
        torch.manual_seed(derived_seed(self.seed, INIT))
        model = build.reconstruction_model(spec)
        if contrastive:  # the reconstruction model's encoder is the query encoder
            model = Contrastive(model, spec.pretrain.contrastive)
        model = model.to(self.device)
        reconstruction = model.reconstruction if contrastive else model  # what fine-tuning gets
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=spec.pretrain.lr,
            weight_decay=spec.pretrain.weight_decay,
        )
        learning_rate = LearningRate(
            optimizer,
            spec.pretrain.lr,
            budget.pretrain_steps,
            warmup=spec.pretrain.warmup,
            schedule=spec.pretrain.schedule,
        )
        first = 0
        if self.state is not None:
            model.load_state_dict(self.state["model"])
            optimizer.load_state_dict(self.state["optimizer"])
            first = self.state["partition"] + 1
        trained = self.session.prepare(model)  # DDP when world > 1; `model` stays bare
        fill = build.input_fill(spec)
        strategy, warmup = build.masking_strategy(spec), build.warmup_strategy(spec)
        scorer = None
        scores_later = strategy.needs_model and max(first, 1) < spec.pretrain.partitions
        if self.rank == 0 and spec.resources.scoring_actors and scores_later and not contrastive:
            # The actors start while partition 0 trains (until one has, the trial scores
            # blocks itself: a partition 0 from the cache); they load the pretraining source.
            scorer = ActorScorer(spec, self.pretrain_source)
        try:
            for partition in range(first, spec.pretrain.partitions):
                indices = self.splits.pretrain_partitions[partition]
                metrics: dict[str, Any] = {"phase": "pretrain", "partition": partition}
                metrics |= {
                    "plan/partitions": spec.pretrain.partitions,
                    "plan/pretrain_steps": budget.pretrain_steps,
                    "precision": str(self.precision),
                }
                saliency = None
                if contrastive:  # masks drawn on each query view; saliency from a frozen net
                    saliency = self._saliency(model)
                    chosen = warmup if partition == 0 else strategy
                    masks, scoring = _on_the_fly(chosen, saliency), {}
                else:
                    masks, scoring = self._masks(
                        partition, strategy, warmup, model, indices, scorer
                    )
                metrics |= scoring
                gallery = self._look(reconstruction, fill, indices, masks, partition, metrics)
                faults.pause_for_a_kill(f"pretrain:{partition}")
                cached = None
                if partition == 0 and self.partition0 is not None:
                    cached = self.partition0.restore(model, optimizer)
                    if cached is not None:
                        self.saved_seconds += cached["partition0_saved_seconds"]
                offset = budget.pretrain_step_offset(partition)
                if cached is not None:
                    metrics |= cached
                else:
                    batches = faults.poisoned(self._pretrain_batches(indices, partition), partition)
                    common = {
                        "steps": budget.partition_steps[partition],
                        "fill": fill,
                        "optimizer": optimizer,
                        "mask_seed": lambda e, p=partition: derived_seed(self.seed, MASKS, p, e),
                        "learning_rate": learning_rate,
                        "first_step": offset,
                        "precision": self.precision,
                    }
                    if contrastive:
                        metrics[LOSS_KEYS["contrastive"]] = train_partition_contrastive(
                            trained,
                            batches,
                            warmup if partition == 0 else strategy,
                            saliency=saliency,
                            hard=build.hard_negative_masking(spec),
                            **common,
                        )
                    else:
                        metrics[LOSS_KEYS["reconstruction"]] = train_partition(
                            trained, batches, masks, loss=build.pretrain_loss(spec), **common
                        )
                metrics["pretrain_steps"] = offset + budget.partition_steps[partition]
                state = {"phase": "pretrain", "partition": partition, "epoch": -1}
                started = self.started
                self._report(metrics, state, model, optimizer, gallery)
                if partition == 0 and cached is None and self.partition0 and self.rank == 0:
                    loss = LOSS_KEYS[spec.pretrain.objective]
                    losses = {loss: float(metrics[loss])}
                    self.partition0.save(model, optimizer, losses, self.started - started)
                faults.raise_after_partition(partition, self.first_attempt)
        finally:
            if scorer is not None:
                scorer.close()
        return {key: value.detach().cpu() for key, value in reconstruction.state_dict().items()}

    def _saliency(self, model: Contrastive):
        """The frozen saliency network of a partition (`pretrain.contrastive.saliency_weights`,
        or a copy of the encoder as the partition starts)."""

        def from_file(path: str):
            unet = build.segmentation_model(self.spec)
            load_encoder_weights(unet, path)
            return unet.encoder.to(self.device)

        return frozen_saliency(model, self.spec.pretrain.contrastive.saliency_weights, from_file)

    def finetune(self, pretrained: dict[str, torch.Tensor] | None) -> None:
        spec, budget = self.spec, self.budget
        torch.manual_seed(derived_seed(self.seed, HEAD))
        model = build.segmentation_model(spec)
        transfer = "no pretraining" if spec.masking.strategy == "none" else None
        if pretrained is not None:
            transfer = transfer_weights(pretrained, model).summary()
        model = mrm.with_rebuilder(model, spec.mrm)  # trains with a Rebuilder when mrm.enabled
        segmentation = mrm.segmentation_part(model)  # what is validated and exported
        model.to(self.device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=spec.finetune.lr, weight_decay=spec.finetune.weight_decay
        )
        learning_rate = LearningRate(
            optimizer,
            spec.finetune.lr,
            budget.finetune_steps,
            warmup=spec.finetune.warmup,
            schedule=spec.finetune.schedule,
        )
        first = 0
        if self.state is not None and self.state["phase"] == "finetune":
            model.load_state_dict(self.state["model"])
            optimizer.load_state_dict(self.state["optimizer"])
            first = self.state["epoch"] + 1
        trained = self.session.prepare(model)
        train = SegmentationDataset(
            self.source,
            _shard(self.splits.train, self.rank, self.world),
            finetune_transform(spec.data.image_size, train=True, augment=spec.data.augment),
            seed=derived_seed(self.seed, FINETUNE),
        )
        floor: dict[str, float] = {}
        search = spec.search
        best = self.state.get("best_score") if self.state is not None else None
        for evaluation in range(first, budget.finetune_evaluations):
            faults.pause_for_a_kill(f"finetune:{evaluation}")
            done = budget.evaluation_step(evaluation - 1) if evaluation else 0
            steps = budget.evaluation_step(evaluation) - done
            metrics: dict[str, Any] = {"phase": "finetune", "epoch": evaluation}
            auxiliary: list[float] = []
            metrics["finetune_loss"] = self._finetune_steps(
                trained, train, optimizer, learning_rate, done, steps, auxiliary
            )
            if auxiliary:  # MRM: the weighted feature-reconstruction part of finetune_loss
                metrics["mrm_loss"] = sum(auxiliary) / max(1, len(auxiliary))
            metrics["finetune_steps"] = done + steps
            if spec.finetune.precise_bn:
                train_view = self._on_device(self._labelled(self.splits.train))
                recalibrate_batchnorm(segmentation, train_view, self.precision)
            confusion = confusion_matrix(
                segmentation,
                self._on_device(self._labelled(self.splits.val)),
                spec.data.num_classes,
                self.precision,
            )
            metrics |= segmentation_metrics(confusion, self.source.class_names)
            floor = floor or self._floor(confusion.sum(dim=1))
            metrics |= floor
            if transfer is not None:
                metrics["transfer"] = transfer
            metrics["done"] = evaluation == budget.finetune_evaluations - 1
            if spec.robustness.enabled and (metrics["done"] or search.metric.startswith("robust/")):
                metrics |= self._robustness(segmentation)
            metrics |= {
                "plan/finetune_steps": budget.finetune_steps,
                "plan/finetune_evaluations": budget.finetune_evaluations,
                "precision": str(self.precision),
            }
            value = metrics.get(search.metric)
            if isinstance(value, float) and math.isfinite(value):
                keep = max if search.mode == "max" else min
                best = value if best is None else keep(best, value)
            if best is not None:
                metrics[f"best/{search.metric}"] = best  # search.score: best
            state = {
                "phase": "finetune",
                "partition": -1,
                "epoch": evaluation,
                "best_score": best,
            }
            self._report(metrics, state, model, optimizer)

    def _finetune_steps(
        self, model, train, optimizer, learning_rate, first_step, steps, auxiliary=None
    ) -> float:
        """`steps` fine-tuning steps from `first_step` on, pass after pass over `train` (each
        pass its own seeded order and augmentation); returns the mean loss per image.
        `auxiliary` collects each step's auxiliary loss (MRM's), when the model has one."""
        spec = self.spec

        def order(pass_index: int) -> torch.Tensor:
            seed = derived_seed(self.seed, FINETUNE_SHUFFLE, pass_index)
            return torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))

        total, images = 0.0, 0
        segments = step_batches(len(train), spec.finetune.batch_size, first_step, steps, order)
        for pass_index, batches in segments:
            train.set_epoch(pass_index)
            loader = DataLoader(train, batch_sampler=batches, **self.loading)
            count = sum(len(batch) for batch in batches)
            loss = finetune_epoch(
                model,
                self._on_device(loader),
                optimizer,
                learning_rate=learning_rate,
                first_step=first_step,
                precision=self.precision,
                auxiliary=auxiliary,
            )
            total, images = total + loss * count, images + count
            first_step += len(batches)
        return total / max(1, images)

    def _robustness(self, model) -> dict[str, float]:
        """`robust/` metrics of the model on the validation split under each factor's shift,
        seeded from spec.seed (every trial of a sweep sees the same shifted images)."""
        started = time.perf_counter()
        settings = self.spec.robustness
        metrics = robustness.robust_metrics(
            model,
            lambda: self._on_device(self._labelled(self.splits.val)),
            self.source.class_names,
            factors=settings.factors,
            severity=settings.severity,
            seed=self.spec.seed,
            precision=self.precision,
        )
        return metrics | {"robust_seconds": time.perf_counter() - started}

    def _floor(self, val_counts: torch.Tensor) -> dict[str, float]:
        """`floor/miou` and `floor/pixel_accuracy`: what a model that learned nothing scores."""
        labels = (mask for _, mask in self._labelled(self.splits.train))
        counts = label_counts(labels, self.spec.data.num_classes)
        return trivial_metrics(val_counts, counts, self.source.class_names)

    def _labelled(self, indices: tuple[int, ...]) -> DataLoader:
        """Labelled images as they are validated (no augmentation), in batches."""
        view = SegmentationDataset(self.source, indices, eval_transform(self.spec.data.image_size))
        return DataLoader(view, batch_size=self.spec.finetune.batch_size, **self.loading)

    # --- masks ----------------------------------------------------------------------------------

    def _masks(self, partition, strategy, warmup, model, indices, scorer):
        """A partition's masks and scoring metrics. Partition 0 is the warm-up every strategy
        shares (random, new masks every batch). After it: scored from the previous partition's
        model (selective, saliency), drawn once per image for the whole partition (model-free
        strategies with `refresh: partition`), or drawn every batch."""
        if partition == 0:
            return per_batch_masks(warmup), {}
        if strategy.needs_model:
            return self._scored_masks(strategy, model, indices, scorer)
        if build.mask_refresh(self.spec) == "partition":
            seeds = [derived_seed(self.seed, FIXED_MASKS, partition, i) for i in indices]
            return drawn_once(strategy, indices, seeds, self.spec.data.image_size), {}
        return per_batch_masks(strategy), {}

    def _scored_masks(self, strategy, model, indices, scorer) -> tuple[Any, dict[str, float]]:
        """Masks of a partition from the model after the previous one; rank 0 scores, all get
        the table."""
        table, scoring = None, {}
        if self.rank == 0:
            seeds = [derived_seed(self.seed, SCORING, i) for i in indices]
            if scorer is not None:
                scored = scorer.score(model, indices, seeds)
            else:
                scored = score_in_process(
                    strategy,
                    model,
                    self.pretrain_source,
                    indices,
                    seeds,
                    self.spec.data.image_size,
                    self.precision,
                )
            table = MaskTable.from_scores(
                indices, scored.scores, strategy.ratio, strategy.patch_size, tie_seeds=seeds
            )
            scoring = {
                "scored_images": len(indices),
                "scoring_actors": len(scorer.actors) if scorer is not None else 0,
                "scoring_seconds": scored.seconds,
                "scored_by_actors": int(scored.by_actors),
                "scoring_actor_restarts": scored.actor_restarts,
                "scored_blocks_in_process": scored.blocks_in_process,
                "scoring_ms_per_image": 1000 * scored.seconds / len(indices),
            }
        if self.world > 1:
            shared = [table]
            dist.broadcast_object_list(shared, src=0)
            table = shared[0]
        return table, scoring

    def _look(self, model, fill, indices, masks, partition, metrics) -> Path | None:
        """Rank 0: mechanism diagnostics (into `metrics`) and the gallery, for the model and
        masks of this partition as training on it begins."""
        if self.rank != 0:
            return None
        spec = self.spec
        generator = torch.Generator().manual_seed(derived_seed(self.seed, MASKS, partition))
        where = (generator, spec.data.image_size, self.device)
        metrics |= looks.diagnostics(self.pretrain_source, indices, masks, *where)
        return looks.gallery(
            model, fill, self.pretrain_source, indices, masks, *where, partition, self.precision
        )

    # --- data -----------------------------------------------------------------------------------

    def _pretrain_batches(self, indices, partition):
        dataset = PretrainDataset(
            self.pretrain_source,
            _shard(indices, self.rank, self.world),
            pretrain_transform(self.spec.data.image_size, augment=False),
        )

        def batches(epoch: int):
            seed = derived_seed(self.seed, SHUFFLE, partition, epoch)
            loader = DataLoader(
                dataset,
                batch_size=self.spec.pretrain.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                **self.loading,
            )
            return self._on_device(loader)

        return batches

    def _on_device(self, loader: DataLoader):
        pinned = self.loading["pin_memory"]  # a pinned batch can be copied without blocking
        for first, second in loader:
            yield (
                first.to(self.device, non_blocking=pinned),
                second.to(self.device, non_blocking=pinned),
            )

    # --- checkpoints ----------------------------------------------------------------------------

    def _phase(self) -> str:
        return self.state["phase"] if self.state is not None else "pretrain"

    def _report(self, metrics, where, model, optimizer, gallery: Path | None = None) -> None:
        now = time.perf_counter()
        self.compute_seconds += now - self.started
        self.started = now
        metrics["compute_seconds"] = self.compute_seconds
        self.scoring_seconds += metrics.get("scoring_seconds", 0.0)
        if metrics.get("done"):
            wall = time.time() - self.attempt_started
            metrics |= trial_cost(self.spec, wall, self.compute_seconds, self.scoring_seconds)
            metrics["cost/partition0_saved_seconds"] = self.saved_seconds
        if self.rank != 0:
            self.session.report(TrialReport.of(metrics).for_tune(), None)
            return
        # A finished trial never trains again: its last checkpoint keeps the final weights only.
        finished = bool(metrics.get("done"))
        state = {
            **where,
            # a finished trial exports the plain U-Net (an MRM Rebuilder is training-only)
            "model": (mrm.segmentation_part(model) if finished else model).state_dict(),
            **({} if finished else {"optimizer": optimizer.state_dict()}),
            "compute_seconds": self.compute_seconds,
            "scoring_seconds": self.scoring_seconds,
            "saved_seconds": self.saved_seconds,
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
            integrity.seal(root, (STATE_FILE, META_FILE))  # a reader can tell it is whole
            if gallery is not None:
                (root / gallery.name).write_bytes(gallery.read_bytes())
                gallery.unlink()
                gallery.parent.rmdir()
            self._send(TrialReport.of(metrics), root, root / gallery.name if gallery else None)

    def _send(self, report: TrialReport, root: Path | None, gallery: Path | None = None) -> None:
        """Rank 0: the report with its checkpoint to the session (Train, and Tune beyond it),
        then, once the checkpoint is stored, to the recorder (MLflow, galleries, result)."""
        if self.logged_through is not None and integrity.position(report.flat()) <= (
            self.logged_through
        ):
            report = report.again()  # MLflow has it: logged before a damaged checkpoint
        self.session.report(report.for_tune(), root)
        if self.recorder is not None:
            self.recorder.record(report, gallery)

    def _restore(self, directory: Path | None) -> dict[str, Any] | None:
        self.last_report: dict[str, Any] = {}
        self.logged_through: integrity.Position | None = None
        if directory is None:
            return None
        damaged = integrity.damaged(Path(directory), (STATE_FILE, META_FILE))
        if damaged:  # cut short (a lost node, a full disk): never load half a model
            self.logged_through = integrity.logged_through(Path(directory) / META_FILE)
            integrity.warn(damaged, "the trial starts again from the beginning")
            return None
        meta = Path(directory) / META_FILE
        if meta.is_file():
            self.last_report = json.loads(meta.read_text())["metrics"]
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        if state["spec"] != self.spec.to_yaml():
            raise ValueError(
                f"checkpoint {directory} was written for a different trial config; "
                "resume with the spec it was written with, or start a new run name"
            )
        torch.set_rng_state(state["torch_rng"])
        self.run_ids = state["run_ids"] or self.run_ids
        return state


def loader_settings(resources: ResourcesConfig, device: torch.device) -> dict[str, Any]:
    """DataLoader settings of every loader of the trial: `resources.data_workers` processes
    (not persistent: the loaders are made anew for every pass, and a persistent worker's copy of
    the dataset would not see `set_epoch`), memory pinned when the batches go to a CUDA device.
    Batches do not depend on the workers: each item's augmentation is seeded from its own index
    (`smsweep.data.datasets`), and the order is drawn in this process."""
    pin = resources.pin_memory is not False and device.type == "cuda"
    return {"num_workers": resources.data_workers, "pin_memory": pin}


def _on_the_fly(strategy, saliency):
    """Masks drawn for the images at hand (contrastive: each augmented view), saliency
    strategies reading the frozen network."""

    def masks(images, indices, generator):
        return strategy(images, generator, model=saliency if strategy.needs_model else None)

    return masks


def _shard(indices, rank: int, world: int) -> tuple[int, ...]:
    """Rank `rank`'s equal share (wrapping around when needed: DDP needs equal step counts)."""
    indices = tuple(indices)
    if world == 1:
        return indices
    per_rank = -(-len(indices) // world)
    padded = (indices * world)[: per_rank * world]
    return padded[rank::world]
