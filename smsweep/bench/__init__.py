"""`python -m smsweep bench [--json]`: measure the hot paths of a sweep on this machine.

One run measures, on the current machine (CUDA when available, else the CPU):

- `scorer_vs_literal`: the vectorized selective scorer (`masking.scorer.patch_loss_scores`) against
  the literal reference (`masking.reference.reference_patch_loss_scores`) on the same model,
  images, generator seed, patch size, ratio, samples and fill (speedup, higher is better);
- `scorer_vs_forward`: the scorer's time over the time of its B*K forward passes alone, on the
  same masked inputs, in eval mode without grad, split into chunks of `chunk_size` (1.0 = the
  scorer costs nothing beyond the model; how the scorer itself groups variants into forwards is
  part of what this measures; on CUDA the scorer draws each chunk's masks while the previous
  chunk's forwards run and compiles its loss map in the warm-up round, `scorer_loss_map`);
- `train_step_vs_bare`: images/s of `pretrain.pretrain_step` (fresh RandomMasking masks each step,
  MeanFill, MS-SSIM+L1, AdamW) over images/s of a bare torch loop with the same model, loss,
  batch and optimizer and a fixed precomputed mask;
- `actors_2_vs_1`: `scoring_actors.ActorScorer.score` on one partition with 2 actors vs 1
  (1 CPU each), each pool timed after a warm-up call, so actor start-up is not timed;
- `trainer_fits_per_trial` and `trial_fixed_overhead_s`: one tiny real trial (`trial.run_trial`);
  fits are counted where `run_trial` starts them (tests/test_trial.py checks that count against
  the `TrainController` actors Ray Train starts, one per fit);
- `trial_fixed_overhead_in_process_s`: the same trial with `resources.train_workers: 0` (the
  loop in the trial's own process, no Train start-up);
- `partition0_cache_saving`: quickstart-sized trials of one repeat seed with different searched
  masking settings, in this process, sharing a partition-0 cache: the smallest share of the first
  trial's partition-0 seconds that a later trial did not spend (`bench.cache_saving`; alone:
  `python -m smsweep.bench.cache_saving`).

`scorer_vs_literal`'s target is >= 20 on a GPU; on a CPU, where the literal reference runs the
same B*K forwards at batch 1, it is 0.9 x `literal_forward_bound` measured in the same run.

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

# The package: `run_bench` and `main` here. `inputs` holds what is measured (sizes, model, images,
# both scorers, both training loops), `timing` how it is timed (rounds, CPU meter, precision),
# `measure` the scorer and train-step measurements, `ray_runs` the actor and trial ones, and
# `output` the targets, the JSON line and the table. (A comment, not part of the docstring above:
# the docstring is `python -m smsweep.bench --help`'s description.)

from __future__ import annotations

import resource
import time
from typing import Any

import torch

# The private helpers are re-exported too (each imported `as` itself), so every name the module had
# stays reachable as `smsweep.bench.<name>`.
from smsweep.bench.inputs import (
    TRIAL_SPEC,
    Sizes,
    TrainParts,
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
from smsweep.bench.inputs import _scorer_settings as _scorer_settings
from smsweep.bench.measure import (
    _load_average,
    available_cpus,
    describe_device,
    measure_scorer,
    measure_train_step,
    peak_rss_mb,
)
from smsweep.bench.output import (
    INFO_ROWS,
    RAY_KEYS,
    REQUIRED_KEYS,
    TARGETS,
    UNITS,
    format_json,
    format_table,
    passes,
)
from smsweep.bench.output import _finite as _finite
from smsweep.bench.output import _show as _show
from smsweep.bench.ray_runs import _actor_torch_threads as _actor_torch_threads
from smsweep.bench.ray_runs import _block_forwards as _block_forwards
from smsweep.bench.ray_runs import _pid as _pid
from smsweep.bench.ray_runs import (
    actor_spec,
    measure_actors,
    measure_ray,
    measure_trial,
)
from smsweep.bench.timing import (
    CpuMeter,
    Precision,
    Rounds,
    _threads,
    choose_precision,
    time_rounds,
)
from smsweep.bench.timing import _progress as _progress
from smsweep.bench.timing import _sync as _sync


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
    else:
        results |= dict.fromkeys(RAY_KEYS)
        results["skipped"] = "the actors and the trial (--skip-ray): their keys are null"
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


def main(
    json_output: bool = False,
    *,
    skip_ray: bool = False,
    image_size: int = Sizes.image_size,
    batch_size: int = Sizes.batch_size,
) -> int:
    """Run the bench, print the table (and the JSON line last with `json_output`); `skip_ray`
    measures the scorer and the training step alone; the sizes apply to those two."""
    sizes = Sizes(image_size=image_size, batch_size=batch_size)
    results = run_bench(sizes, ray_parts=not skip_ray)
    print(format_table(results), flush=True)
    if json_output:
        print(format_json(results), flush=True)
    return 0


__all__ = [
    "INFO_ROWS",
    "RAY_KEYS",
    "REQUIRED_KEYS",
    "TARGETS",
    "TRIAL_SPEC",
    "UNITS",
    "CpuMeter",
    "Precision",
    "Rounds",
    "Sizes",
    "TrainParts",
    "actor_spec",
    "available_cpus",
    "bare_steps",
    "bench_images",
    "bench_model",
    "choose_precision",
    "describe_device",
    "fixed_pixel_mask",
    "format_json",
    "format_table",
    "forward_floor",
    "literal_forwards",
    "literal_scores",
    "main",
    "make_optimizer",
    "masked_variants",
    "measure_actors",
    "measure_ray",
    "measure_scorer",
    "measure_train_step",
    "measure_trial",
    "passes",
    "peak_rss_mb",
    "run_bench",
    "smsweep_steps",
    "time_rounds",
    "train_parts",
    "vectorized_scores",
]
