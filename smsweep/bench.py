"""`python -m smsweep bench [--json]`: measure the hot paths of a sweep on this machine.

One run measures, on the current machine (CUDA when available, else the CPU):

- `scorer_vs_literal`: the vectorized selective scorer (`masking.scorer.patch_loss_scores`) against
  the literal reference (`masking.reference.reference_patch_loss_scores`) on the same model,
  images, generator seed, patch size, ratio, samples and fill (speedup, higher is better);
- `scorer_vs_forward`: the scorer's time over the time of its B*K forward passes alone, on the
  same masked inputs, in eval mode without grad, split into chunks of `chunk_size` (1.0 = the
  scorer costs nothing beyond the model; how the scorer itself groups variants into forwards is
  part of what this measures);
- `train_step_vs_bare`: images/s of `pretrain.pretrain_step` (fresh RandomMasking masks each step,
  MeanFill, MS-SSIM+L1, AdamW) over images/s of a bare torch loop with the same model, loss,
  batch and optimizer and a fixed precomputed mask;
- `actors_2_vs_1`: `scoring.ActorScorer.score` on one partition with 2 actors vs 1 (1 CPU each),
  each pool timed after a warm-up call, so actor start-up is not timed;
- `trainer_fits_per_trial` and `trial_fixed_overhead_s`: one tiny real trial (`trial.run_trial`);
  fits are counted from outside, as the `TrainController` actors Ray Train starts (one per fit).

Every time is the median of `repeats` rounds after one warm-up round. Within a round the variants
of a ratio run one after the other, in alternating order (A B, B A, ...), and a ratio is the median
of the per-round ratios, so that load from other processes hits both sides alike (the 1- and
2-actor pools cannot coexist on 2 CPUs: they alternate over `actor_cycles` cycles instead, each
pool started, warmed up, timed and closed). Seeds are fixed.
The sizes are in `Sizes` and in the output. On CUDA, bf16 autocast and channels_last are used only
when a quick probe finds them faster (forward-only for scoring, forward+backward for training),
and then on both sides of every ratio; on the CPU everything runs in float32.

Contention is measured, not guessed: `other_cpus_*` is how many CPUs processes other than the
measured ones kept busy while a section was timed (from /proc; other users of the machine, Ray's
own processes), and `actor_busy_cpus_*` how many the scoring actors got (ideal: 1 per actor).

Progress goes to stderr; stdout gets the table and, with --json, one JSON object as its last line.
The exit status is 0 when the bench ran (targets are reported, not enforced), 1 when it failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from smsweep.losses import WeightedLoss, build_loss
from smsweep.masking import RandomMasking, upsample_mask
from smsweep.masking.base import evaluating, patch_grid
from smsweep.masking.fills import MeanFill
from smsweep.masking.reference import reference_patch_loss_scores
from smsweep.masking.scorer import (
    patch_loss_scores,
    per_image_generators,
    reconstruct,
    sample_masks,
)
from smsweep.models import MaskedUnet, build_unet
from smsweep.pretrain import per_batch_masks, pretrain_step

# metric -> (comparison, target). Everything else in the output is information.
TARGETS: dict[str, tuple[str, float]] = {
    "scorer_vs_literal": (">=", 20.0),
    "scorer_vs_forward": ("<=", 1.15),
    "train_step_vs_bare": (">=", 0.95),
    "actors_2_vs_1": (">=", 1.6),
    "trainer_fits_per_trial": ("==", 1),
}
REQUIRED_KEYS: tuple[str, ...] = (
    *TARGETS,
    "scoring_ms_per_image",
    "peak_rss_mb",
    "trial_fixed_overhead_s",
    "device",
    "torch_threads",
    "sizes",
)
UNITS = {
    "scorer_vs_literal": "x",
    "scorer_vs_forward": "x",
    "train_step_vs_bare": "x",
    "actors_2_vs_1": "x",
    "trainer_fits_per_trial": "",
}


@dataclass(frozen=True)
class Sizes:
    """What the bench runs on. The defaults are the full bench: a realistic small U-Net (resnet18
    encoder, depth 4, ~3.1 M parameters), 64x64 images, batches of 16, patch 8 (an 8x8 grid),
    ratio 0.5, K = 5 samples (the paper's) and the library's default chunk of 64 variants, in the
    spec's default memory layout (`model.channels_last`)."""

    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8)
    image_size: int = 64
    batch_size: int = 16  # images per scorer call and per training step
    patch_size: int = 8
    ratio: float = 0.5
    samples: int = 5  # K
    chunk_size: int = 64  # variants per forward (SelectiveMasking's default)
    train_steps: int = 3  # optimizer steps per timed training repetition
    partition_images: int = 64  # images the actors score per call (4 blocks of 16)
    repeats: int = 7  # timed repetitions per measurement, after one warm-up
    actor_cycles: int = 3  # 1-actor and 2-actor pools alternate this many times (see actors)
    seed: int = 0
    channels_last: bool = True  # model.channels_last (the spec's default)

    def as_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


# The tiny real trial whose fits and fixed overhead are measured: 24 synthetic 32x32 images,
# 2 pretraining partitions (the second is scored by one actor), 1 fine-tuning epoch.
TRIAL_SPEC: dict[str, Any] = {
    "name": "bench-trial",
    "seed": 3,
    "data": {"image_size": 32, "num_classes": 4, "num_images": 24, "val_fraction": 0.25},
    "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
    "pretrain": {"partitions": 2, "epochs_per_partition": 1, "batch_size": 8},
    "masking": {"strategy": "selective", "ratio": 0.5, "patch_size": 8, "samples": 2},
    "finetune": {"epochs": 1, "batch_size": 8},
    "resources": {
        "cpus_per_trial": 0.5,
        "train_workers": 1,
        "cpus_per_worker": 1,
        "scoring_actors": 1,
        "cpus_per_actor": 0.5,
    },
}


# --- inputs (shared with the tests) --------------------------------------------------------------


def bench_model(sizes: Sizes) -> MaskedUnet:
    """The reconstruction U-Net `build.reconstruction_model` makes for these sizes (mean fill, no
    mask token), with weights seeded by `sizes.seed`."""
    torch.manual_seed(sizes.seed)
    unet = build_unet(
        sizes.encoder,
        classes=3,
        encoder_depth=sizes.encoder_depth,
        decoder_channels=sizes.decoder_channels,
        activation="sigmoid",
    )
    return MaskedUnet(unet, mask_stage=None, patch_sizes=[sizes.patch_size])


def bench_images(sizes: Sizes, count: int | None = None) -> Tensor:
    """`count` (default batch_size) synthetic scenes through the pretraining view, like
    `scoring.load_images`: (n, 3, S, S) float32 in [0, 1]."""
    from smsweep.data import SyntheticSource
    from smsweep.data.datasets import image_tensor
    from smsweep.data.transforms import pretrain_transform

    count = sizes.batch_size if count is None else count
    source = SyntheticSource(count, sizes.image_size, 5, sizes.seed)
    transform = pretrain_transform(sizes.image_size, augment=False)
    return torch.stack(
        [image_tensor(transform(image=source.load(i)[0])["image"]) for i in range(count)]
    )


def _scorer_settings(sizes: Sizes) -> dict[str, Any]:
    return {
        "patch_size": sizes.patch_size,
        "ratio": sizes.ratio,
        "samples": sizes.samples,
        "fill": MeanFill(),
        "sampling": "random",
    }


def vectorized_scores(model: nn.Module, images: Tensor, sizes: Sizes) -> Tensor:
    """The library's scorer: (B, h, w)."""
    generator = torch.Generator().manual_seed(sizes.seed)
    return patch_loss_scores(
        model, images, generator=generator, chunk_size=sizes.chunk_size, **_scorer_settings(sizes)
    )


def literal_scores(model: nn.Module, images: Tensor, sizes: Sizes) -> Tensor:
    """The literal reference on the same inputs and draws: (B, h, w)."""
    generator = torch.Generator().manual_seed(sizes.seed)
    return reference_patch_loss_scores(
        model, images, generator=generator, **_scorer_settings(sizes)
    )


def masked_variants(images: Tensor, sizes: Sizes) -> tuple[Tensor, Tensor]:
    """The B*K filled inputs and pixel masks the scorer feeds the model, drawn the way it draws
    them (image by image: K masks, then the fill): (B*K, C, H, W) and (B*K, 1, H, W)."""
    grid = patch_grid(images, sizes.patch_size)
    generator = torch.Generator().manual_seed(sizes.seed)
    fill = MeanFill()
    inputs, masks = [], []
    for image, image_generator in zip(
        images, per_image_generators(images.shape[0], generator, None), strict=True
    ):
        draws = sample_masks(
            grid,
            ratio=sizes.ratio,
            samples=sizes.samples,
            sampling="random",
            generator=image_generator,
        ).to(images.device)
        pixel_mask = upsample_mask(draws, sizes.patch_size)  # (K, 1, H, W)
        target = image.unsqueeze(0).expand(sizes.samples, -1, -1, -1)
        inputs.append(fill(target, pixel_mask, image_generator))
        masks.append(pixel_mask)
    return torch.cat(inputs), torch.cat(masks)


def forward_floor(model: nn.Module, inputs: Tensor, masks: Tensor, chunk_size: int) -> int:
    """The scorer's floor: only the model on the prepared variants, `chunk_size` at a time, in
    eval mode without grad. `reconstruct` is the scorer's call: model(inputs) for a model
    without a mask token. Returns the number of variants forwarded."""
    forwarded = 0
    with evaluating(model):
        for x, m in zip(inputs.split(chunk_size), masks.split(chunk_size), strict=True):
            reconstruct(model, x, m)
            forwarded += x.shape[0]
    return forwarded


def literal_forwards(model: nn.Module, inputs: Tensor, masks: Tensor) -> int:
    """The literal reference's model cost alone: the B*K variants one at a time."""
    return forward_floor(model, inputs, masks, chunk_size=1)


@dataclass
class TrainParts:
    """What both training loops share: same loss object, same images, same masking settings."""

    images: Tensor
    loss: WeightedLoss
    strategy: RandomMasking
    fill: MeanFill


def train_parts(sizes: Sizes, device: torch.device | str = "cpu") -> TrainParts:
    return TrainParts(
        images=bench_images(sizes).to(device),
        loss=build_loss({"msssim_l1": 1.0}),
        strategy=RandomMasking(sizes.patch_size, sizes.ratio),
        fill=MeanFill(),
    )


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The pretraining optimizer with the spec's defaults (pretrain.lr 1e-3, weight_decay 0)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)


def smsweep_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    parts: TrainParts,
    generator: torch.Generator,
    steps: int,
) -> list[float]:
    """`steps` steps as `pretrain.train_partition` runs them: a fresh mask from the strategy, then
    `pretrain_step`. Returns the losses."""
    masks = per_batch_masks(parts.strategy)
    indices = torch.arange(parts.images.shape[0])
    losses = []
    for _ in range(steps):
        mask = masks(parts.images, indices, generator)
        losses.append(
            pretrain_step(
                model,
                parts.images,
                mask,
                fill=parts.fill,
                loss=parts.loss,
                optimizer=optimizer,
                generator=generator,
            )
        )
    return losses


def fixed_pixel_mask(parts: TrainParts, seed: int) -> Tensor:
    """The bare loop's mask: the strategy's first draw from `seed`, precomputed (B, 1, H, W)."""
    return parts.strategy(parts.images, torch.Generator().manual_seed(seed)).pixels()


def bare_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    parts: TrainParts,
    pixel_mask: Tensor,
    steps: int,
) -> list[Tensor]:
    """The floor: a plain torch loop, mean fill inline, fixed mask, no checks, no host syncs.
    Returns the (detached) losses."""
    images = parts.images
    losses = []
    for _ in range(steps):
        inputs = torch.where(pixel_mask, images.mean(dim=(2, 3), keepdim=True), images)
        value = parts.loss(model(inputs), images, pixel_mask)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(value.detach())
    return losses


# --- output --------------------------------------------------------------------------------------


def passes(metric: str, value: Any) -> bool | None:
    """Whether `value` meets the metric's target (None: no target, or no value)."""
    if metric not in TARGETS or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    op, target = TARGETS[metric]
    if op == ">=":
        return value >= target
    if op == "<=":
        return value <= target
    return value == target


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def format_json(results: Mapping[str, Any]) -> str:
    """One line of JSON: the required keys first, then the rest, then `targets`, `passed` and
    `all_passed`. Raises ValueError when a required key is missing."""
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ValueError(f"bench results lack {missing}")
    ordered = {key: results[key] for key in REQUIRED_KEYS}
    ordered |= {key: value for key, value in results.items() if key not in ordered}
    verdicts = {metric: passes(metric, results[metric]) for metric in TARGETS}
    ordered["targets"] = {metric: f"{op} {target:g}" for metric, (op, target) in TARGETS.items()}
    ordered["passed"] = verdicts
    ordered["all_passed"] = all(verdicts.values())
    return json.dumps(_finite(ordered), allow_nan=False, separators=(", ", ": "))


def _show(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, list):
        return " ".join(_show(item, unit) for item in value)
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


INFO_ROWS = (
    ("scoring_ms_per_image", "ms"),
    ("literal_forward_bound", "x"),
    ("batching_gain", "x"),
    ("actors_2_vs_1_per_cycle", ""),
    ("actors_2_vs_1_ceiling", "x"),
    ("channels_last_gain_scoring", "x"),
    ("channels_last_gain_train", "x"),
    ("actor_ms_per_image_1", "ms"),
    ("actor_ms_per_image_2", "ms"),
    ("train_images_per_s", "/s"),
    ("bare_images_per_s", "/s"),
    ("trial_wall_s", "s"),
    ("trial_compute_s", "s"),
    ("trial_fixed_overhead_s", "s"),
    ("actor_busy_cpus_1", ""),
    ("actor_busy_cpus_2", ""),
    ("other_cpus_scorer", ""),
    ("other_cpus_train", ""),
    ("other_cpus_actors_1", ""),
    ("other_cpus_actors_2", ""),
    ("peak_rss_mb", " MB"),
    ("peak_rss_children_mb", " MB"),
    ("wall_seconds", "s"),
)


def format_table(results: Mapping[str, Any]) -> str:
    """A readable table: targeted metrics with target and pass/fail, then the information rows."""
    rows = [("metric", "value", "target", "pass")]
    for metric, (op, target) in TARGETS.items():
        verdict = passes(metric, results.get(metric))
        shown = {True: "PASS", False: "FAIL", None: "n/a"}[verdict]
        rows.append((metric, _show(results.get(metric), UNITS[metric]), f"{op} {target:g}", shown))
    rows += [(key, _show(results[key], unit), "", "") for key, unit in INFO_ROWS if key in results]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    context = [f"device: {results.get('device')}, torch threads: {results.get('torch_threads')}"]
    if "precision" in results:
        context.append(f"precision: {results['precision']}")
    if "load_avg_1m_start" in results:
        context.append(
            f"machine load (1-min average, the bench's own work included): "
            f"{results['load_avg_1m_start']} at the start, {results.get('load_avg_1m_end')} at "
            "the end"
        )
    if "sizes" in results:
        context.append("sizes: " + ", ".join(f"{k}={v}" for k, v in results["sizes"].items()))
    return "\n".join([*context, "", *lines])


# --- timing --------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Rounds:
    """Seconds of each timed function, one entry per round."""

    seconds: Mapping[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of the ratio within each round: load that comes and goes between
        rounds cancels out."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)


def time_rounds(
    functions: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    device: torch.device,
    warmup: int = 1,
) -> Rounds:
    """Time each function once per round for `repeats` rounds, after `warmup` untimed rounds.
    The order alternates (A B C, C B A, ...) so that a machine slowing down or speeding up
    within a round does not favour whichever runs first."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    _sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions)
    for round_index in range(repeats):
        for name in order if round_index % 2 == 0 else reversed(order):
            start = time.perf_counter()
            functions[name]()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
    return Rounds(seconds)


class CpuMeter:
    """CPU time while timed sections run, from /proc (Linux; elsewhere every figure is None).

    `busy(pids)`: CPUs the given processes kept busy on average (1.0 = one full CPU);
    `others()`: CPUs everything not tracked kept busy (other work on the machine, Ray's own
    processes): the contention the timings saw. Enter it once per section; it sums them.
    """

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or [os.getpid()]
        self.wall = 0.0
        self.system = 0.0
        self.per_pid = [0.0] * len(self.pids)
        self.ok = True

    def _snapshot(self) -> tuple[float, float, list[float]] | None:
        try:
            ticks = os.sysconf("SC_CLK_TCK")
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
            system = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle, iowait
            processes = []
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as stat:
                    after_name = stat.read().rsplit(")", 1)[1].split()
                processes.append((int(after_name[11]) + int(after_name[12])) / ticks)
        except (OSError, ValueError, IndexError, AttributeError):
            return None
        return time.perf_counter(), system, processes

    def __enter__(self) -> CpuMeter:
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        if self._start is None or end is None:
            self.ok = False
            return
        self.wall += end[0] - self._start[0]
        self.system += end[1] - self._start[1]
        for index, (before, after) in enumerate(zip(self._start[2], end[2], strict=True)):
            self.per_pid[index] += after - before

    def cpu_seconds(self, pids: list[int]) -> float:
        """CPU seconds the given (tracked) processes used inside the sections."""
        return sum(self.per_pid[self.pids.index(pid)] for pid in pids)

    def other_seconds(self) -> float:
        """CPU seconds everything untracked used inside the sections."""
        return max(self.system - sum(self.per_pid), 0.0)

    def busy(self, pids: list[int]) -> float | None:
        if not self.ok or not self.wall:
            return None
        return round(self.cpu_seconds(pids) / self.wall, 2)

    def others(self) -> float | None:
        if not self.ok or not self.wall:
            return None
        return round(self.other_seconds() / self.wall, 2)


@dataclass(frozen=True)
class Precision:
    bf16_autocast: bool = False
    channels_last: bool = False

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.bf16_autocast:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def apply(self, model: nn.Module) -> nn.Module:
        """The model in this layout (inputs stay NCHW, as in a trial: the first convolution
        converts them)."""
        if self.channels_last:
            return model.to(memory_format=torch.channels_last)
        return model

    def __str__(self) -> str:
        parts = ["bf16 autocast" if self.bf16_autocast else "float32"]
        if self.channels_last:
            parts.append("channels_last")
        return " + ".join(parts)


def choose_precision(sizes: Sizes, device: torch.device, *, train: bool) -> Precision:
    """On the CPU: float32 in the layout of `sizes.channels_last`, as a trial runs. On CUDA, the
    fastest of float32 / bf16 autocast x contiguous / channels_last for this model (forward
    only, or forward+backward with `train`); an option is kept only when it is at least 5%
    faster than plain float32."""
    if device.type != "cuda":
        return Precision(channels_last=sizes.channels_last)
    images = bench_images(sizes).to(device)
    seconds = {}
    for option in (Precision(a, c) for a in (False, True) for c in (False, True)):
        model = option.apply(bench_model(sizes).to(device))

        def step(model=model, x=images, option=option) -> None:
            with option.context(device), contextlib.ExitStack() as stack:
                if not train:
                    stack.enter_context(torch.no_grad())
                out = model(x)
            if train:
                out.float().mean().backward()

        rounds = time_rounds({"step": step}, repeats=5, device=device, warmup=2)
        seconds[option] = rounds.median("step")
    plain = seconds[Precision()]
    best = min(seconds, key=seconds.__getitem__)
    return best if seconds[best] < 0.95 * plain else Precision()


# --- measurements --------------------------------------------------------------------------------


def measure_scorer(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    precision = choose_precision(sizes, device, train=False)
    model = precision.apply(bench_model(sizes).to(device))
    images = bench_images(sizes).to(device)  # NCHW, as a trial's loaders give them
    inputs, masks = masked_variants(images, sizes)

    def under(function: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with precision.context(device):
                return function()

        return run

    _progress(
        f"scorer: {sizes.batch_size} images x K={sizes.samples}, vectorized vs literal vs "
        f"forward-only, {sizes.repeats} rounds"
    )
    contiguous = bench_model(sizes).to(device)  # the same weights in NCHW, for the layout gain
    functions = {
        "vectorized": under(lambda: vectorized_scores(model, images, sizes)),
        "forward_floor": under(lambda: forward_floor(model, inputs, masks, sizes.chunk_size)),
        "literal": under(lambda: literal_scores(model, images, sizes)),
        "literal_forwards": under(lambda: literal_forwards(model, inputs, masks)),
    }
    if precision.channels_last:
        functions["forward_floor_nchw"] = under(
            lambda: forward_floor(contiguous, inputs, masks, sizes.chunk_size)
        )
    with CpuMeter() as meter:
        rounds = time_rounds(functions, repeats=sizes.repeats, device=device)
    return {
        "scorer_vs_literal": rounds.ratio("literal", "vectorized"),
        "scorer_vs_forward": rounds.ratio("vectorized", "forward_floor"),
        "scoring_ms_per_image": 1000 * rounds.median("vectorized") / sizes.batch_size,
        # The most any scorer could gain over the literal path: its time over the batched floor.
        "literal_forward_bound": rounds.ratio("literal", "forward_floor"),
        # How much the literal path's B*K single-image forwards cost over the batched ones.
        "batching_gain": rounds.ratio("literal_forwards", "forward_floor"),
        # What the channels-last layout saves the scorer's forwards (1.0: not measured).
        "channels_last_gain_scoring": (
            rounds.ratio("forward_floor_nchw", "forward_floor") if precision.channels_last else 1.0
        ),
        "scorer_seconds": {name: round(rounds.median(name), 4) for name in rounds.seconds},
        "scorer_precision": str(precision),
        "other_cpus_scorer": meter.others(),
    }


def measure_train_step(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    precision = choose_precision(sizes, device, train=True)
    parts = train_parts(sizes, device)
    pixel_mask = fixed_pixel_mask(parts, sizes.seed)
    ours = precision.apply(bench_model(sizes).to(device))
    bare = copy.deepcopy(ours)
    bare_nchw = copy.deepcopy(ours).to(memory_format=torch.contiguous_format)
    ours_optimizer, bare_optimizer = make_optimizer(ours), make_optimizer(bare)
    nchw_optimizer = make_optimizer(bare_nchw)
    generator = torch.Generator().manual_seed(sizes.seed)
    for model in (ours, bare, bare_nchw):
        model.train()

    def run_ours() -> None:
        with precision.context(device):
            smsweep_steps(ours, ours_optimizer, parts, generator, sizes.train_steps)

    def run_bare() -> None:
        with precision.context(device):
            bare_steps(bare, bare_optimizer, parts, pixel_mask, sizes.train_steps)

    def run_bare_nchw() -> None:
        with precision.context(device):
            bare_steps(bare_nchw, nchw_optimizer, parts, pixel_mask, sizes.train_steps)

    functions = {"smsweep": run_ours, "bare": run_bare}
    if precision.channels_last:
        functions["bare_nchw"] = run_bare_nchw

    _progress(
        f"train step: batch {sizes.batch_size}, {sizes.train_steps} steps x {sizes.repeats} "
        "rounds, smsweep vs bare"
    )
    with CpuMeter() as meter:
        rounds = time_rounds(functions, repeats=sizes.repeats, device=device)
    images = sizes.batch_size * sizes.train_steps
    return {
        # images/s over images/s = bare seconds over smsweep seconds, per round
        "train_step_vs_bare": rounds.ratio("bare", "smsweep"),
        "train_images_per_s": images / rounds.median("smsweep"),
        "bare_images_per_s": images / rounds.median("bare"),
        # What the channels-last layout saves a training step (1.0: not measured).
        "channels_last_gain_train": (
            rounds.ratio("bare_nchw", "bare") if precision.channels_last else 1.0
        ),
        "train_precision": str(precision),
        "other_cpus_train": meter.others(),
    }


def actor_spec(sizes: Sizes, actors: int):
    """A spec whose reconstruction model and selective strategy are the bench's, with `actors`
    scoring actors of 1 CPU each."""
    from smsweep.config import validate_spec

    return validate_spec(
        {
            "name": "bench-actors",
            "seed": sizes.seed,
            "data": {
                "image_size": sizes.image_size,
                "num_images": max(sizes.partition_images, 16),
                "num_classes": 5,
            },
            "model": {
                "encoder": sizes.encoder,
                "encoder_depth": sizes.encoder_depth,
                "decoder_channels": list(sizes.decoder_channels),
                "channels_last": sizes.channels_last,
            },
            "masking": {
                "strategy": "selective",
                "patch_size": sizes.patch_size,
                "ratio": sizes.ratio,
                "samples": sizes.samples,
                "fill": "mean",
            },
            "resources": {"scoring_actors": actors, "cpus_per_actor": 1},
        }
    )


def measure_actors(sizes: Sizes) -> dict[str, Any]:
    """Seconds of `ActorScorer.score` on one partition with 1 and with 2 actors.

    The two pools cannot coexist on 2 CPUs, so they alternate over `actor_cycles` cycles
    (1 then 2 actors, then 2 then 1, ...); each pool is started, warmed up with one untimed call
    (which waits for its actors to start), timed, and closed. The ratio is the median of the
    per-cycle ratios, so a slow phase of the machine does not land on one pool only.

    The ceiling: in the same pools, the actors run only the model's forwards on the same number
    of variants (split between the actors as the blocks are): what 2 processes on this machine
    can gain over 1 on the work itself, before any scoring or Ray overhead.
    """
    import ray

    from smsweep import build
    from smsweep.data import open_source
    from smsweep.pretrain import derived_seed
    from smsweep.scoring import ActorScorer, blocks
    from smsweep.trainloop import SCORING

    spec = actor_spec(sizes, 1)
    source = open_source(spec.data, seed=spec.seed)
    torch.manual_seed(sizes.seed)
    weights = build.reconstruction_model(spec).state_dict()
    indices = list(range(sizes.partition_images))
    seeds = [derived_seed(spec.seed, SCORING, i) for i in indices]
    calls = max(2, math.ceil(sizes.repeats / sizes.actor_cycles))  # timed calls per pool
    seconds: dict[int, list[float]] = {1: [], 2: []}  # per-cycle medians
    ceiling: dict[int, list[float]] = {1: [], 2: []}  # per-cycle medians, forwards only
    units = len(blocks(indices, seeds, 2))  # forward units: one per block
    every: dict[int, list[float]] = {1: [], 2: []}  # every timed call
    usage = {actors: {"wall": 0.0, "actors": 0.0, "others": 0.0} for actors in (1, 2)}
    scores = {}
    for cycle in range(sizes.actor_cycles):
        for actors in (1, 2) if cycle % 2 == 0 else (2, 1):
            _progress(
                f"actors: cycle {cycle + 1}/{sizes.actor_cycles}, scoring {len(indices)} images "
                f"with {actors} actor(s), {calls} timed calls"
            )
            scorer = ActorScorer(actor_spec(sizes, actors), source)
            try:
                scorer.score(weights, indices, seeds)  # warm-up: waits for the actors to start
                pids = ray.get([actor.__ray_call__.remote(_pid) for actor in scorer.actors])
                meter = CpuMeter([*pids, os.getpid()])
                timed = []
                for _ in range(calls):
                    start = time.perf_counter()
                    with meter:
                        scores[actors] = scorer.score(weights, indices, seeds).scores
                    timed.append(time.perf_counter() - start)
                shares = [len(range(slot, units, actors)) for slot in range(actors)]
                forwards = []
                for _ in range(calls + 1):  # the first is a warm-up
                    start = time.perf_counter()
                    ray.get(
                        [
                            actor.__ray_call__.remote(_block_forwards, sizes, share)
                            for actor, share in zip(scorer.actors, shares, strict=True)
                        ]
                    )
                    forwards.append(time.perf_counter() - start)
                ceiling[actors].append(statistics.median(forwards[1:]))
            finally:
                scorer.close()
            seconds[actors].append(statistics.median(timed))
            every[actors] += timed
            if meter.ok:
                usage[actors]["wall"] += meter.wall
                usage[actors]["actors"] += meter.cpu_seconds(pids)
                usage[actors]["others"] += meter.other_seconds()
    ratios = [one / two for one, two in zip(seconds[1], seconds[2], strict=True)]
    ceilings = [one / two for one, two in zip(ceiling[1], ceiling[2], strict=True)]
    results: dict[str, Any] = {
        "actors_2_vs_1": statistics.median(ratios),
        "actors_2_vs_1_per_cycle": [round(ratio, 3) for ratio in ratios],
        "actors_2_vs_1_ceiling": statistics.median(ceilings),
        "actor_torch_threads": _actor_torch_threads(),
        "actor_scores_match": bool(torch.allclose(scores[1], scores[2], rtol=0, atol=1e-6)),
    }
    for actors in (1, 2):
        results[f"actor_ms_per_image_{actors}"] = (
            1000 * statistics.median(every[actors]) / len(indices)
        )
        # CPUs the actors kept busy while scoring (ideal: 1 per actor), and everything else.
        wall = usage[actors]["wall"]
        results[f"actor_busy_cpus_{actors}"] = (
            round(usage[actors]["actors"] / wall, 2) if wall else None
        )
        results[f"other_cpus_actors_{actors}"] = (
            round(usage[actors]["others"] / wall, 2) if wall else None
        )
    return results


def _pid(actor: object) -> int:
    return os.getpid()


def _block_forwards(worker: Any, sizes: Sizes, blocks_count: int) -> None:
    """In a scoring actor: the model's forwards of `blocks_count` blocks of BLOCK x K variants,
    chunk_size at a time, and nothing else."""
    from smsweep.scoring import BLOCK

    variants = torch.rand(BLOCK * sizes.samples, 3, sizes.image_size, sizes.image_size)
    masks = torch.zeros(variants.shape[0], 1, *variants.shape[-2:], dtype=torch.bool)
    for _ in range(blocks_count):
        forward_floor(worker.model, variants, masks, sizes.chunk_size)


def _actor_torch_threads() -> int:
    """torch's thread count in a Ray worker with 1 CPU, as the scoring actors have: Ray sets
    OMP_NUM_THREADS to the worker's CPUs."""
    import ray

    @ray.remote(num_cpus=1)
    def threads() -> int:
        return torch.get_num_threads()

    return ray.get(threads.remote())


def train_controllers() -> int:
    """TrainController actors Ray has seen (alive or dead): Train V2 starts one per fit."""
    import ray._private.state

    actors = ray._private.state.actors().values()
    return sum(actor["ActorClassName"] == "TrainController" for actor in actors)


def measure_trial() -> dict[str, Any]:
    from smsweep.config import validate_spec
    from smsweep.trial import run_trial

    spec = validate_spec(TRIAL_SPEC)
    _progress("trial: one tiny real trial (2 partitions, 1 fine-tuning epoch)")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:
        before = train_controllers()
        start = time.perf_counter()
        outcome = run_trial(spec, storage_path=storage, run_name="bench-trial")
        wall = time.perf_counter() - start
        fits = train_controllers() - before
    compute = float(outcome.metrics["compute_seconds"])
    return {
        "trainer_fits_per_trial": fits,
        "trial_wall_s": wall,
        "trial_compute_s": compute,
        "trial_fixed_overhead_s": wall - compute,
    }


def measure_ray(sizes: Sizes) -> dict[str, Any]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        _progress("starting a local Ray instance")
        ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        return measure_actors(sizes) | measure_trial()
    finally:
        if started_here:
            ray.shutdown()


def describe_device(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"cpu: {model}, {threads} threads"


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """ru_maxrss in MB: of this process (RUSAGE_SELF), or of the largest terminated descendant
    this process has waited for (RUSAGE_CHILDREN: after `ray.shutdown`, Ray's processes)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def available_cpus() -> int:
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_bench(sizes: Sizes | None = None, *, ray_parts: bool = True) -> dict[str, Any]:
    """Every measurement (full `Sizes()` by default); `ray_parts=False` skips the actors and
    the trial."""
    sizes = sizes or Sizes()
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = available_cpus()
    trial = TRIAL_SPEC
    results: dict[str, Any] = {
        "device": describe_device(device, threads),
        "torch_threads": threads,
        "sizes": sizes.as_dict()
        | {
            "trial": (
                f"{trial['data']['num_images']} synthetic {trial['data']['image_size']}px images, "
                f"{trial['model']['encoder']} depth {trial['model']['encoder_depth']}, "
                f"{trial['pretrain']['partitions']} partitions, "
                f"{trial['finetune']['epochs']} fine-tuning epoch(s), "
                f"{trial['resources']['scoring_actors']} scoring actor"
            )
        },
        "load_avg_1m_start": _load_average(),
    }
    with _threads(threads):
        results |= measure_scorer(sizes, device)
        results |= measure_train_step(sizes, device)
    results["precision"] = (
        f"scoring {results['scorer_precision']}, training {results['train_precision']}"
    )
    if ray_parts:
        results |= measure_ray(sizes)
    results["peak_rss_mb"] = peak_rss_mb()
    results["peak_rss_children_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    results["peak_rss_scope"] = (
        "peak_rss_mb: this process (RUSAGE_SELF: the scorer and train-step measurements); "
        "peak_rss_children_mb: the largest terminated descendant (RUSAGE_CHILDREN after "
        "ray.shutdown: a Ray process), not a sum"
    )
    results["load_avg_1m_end"] = _load_average()
    results["wall_seconds"] = time.perf_counter() - started
    return results


def _load_average() -> float | None:
    """The 1-minute load average: other work on the machine makes every timing noisier."""
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


def main(json_output: bool = False) -> int:
    """Run the bench, print the table (and the JSON line last with `json_output`)."""
    results = run_bench()
    print(format_table(results), flush=True)
    if json_output:
        print(format_json(results), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m smsweep.bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    sys.exit(main(json_output=parser.parse_args().json))
