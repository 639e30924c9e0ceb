"""The in-process measurements: the scorer against the literal path and its forward floor
(`measure_scorer`), smsweep's training step against a bare loop (`measure_train_step`), and what
the results say about the machine (device, peak memory, CPUs, load).
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import resource
import sys
from collections.abc import Callable
from typing import Any

import torch

from smsweep.bench.inputs import (
    Sizes,
    bare_steps,
    bench_images,
    bench_model,
    fixed_pixel_mask,
    forward_floor,
    literal_forwards,
    literal_scores,
    make_optimizer,
    masked_variants,
    smsweep_steps,
    train_parts,
    vectorized_scores,
)
from smsweep.bench.timing import CpuMeter, _progress, choose_precision, time_rounds


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
        # patch_loss_scores' default: compiled on CUDA (compiled in the warm-up round), eager on
        # a CPU
        "scorer_loss_map": "compiled" if device.type == "cuda" else "eager",
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


def _load_average() -> float | None:
    """The 1-minute load average: other work on the machine makes every timing noisier."""
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None
