"""`partition0_cache_saving`: what the partition-0 cache saves in a sweep over masking settings.

Quickstart-sized trials (48 px synthetic images, a depth-3 resnet18 U-Net, 40 steps of batch 16
on partition 0), one repeat seed, each with other searched masking settings (strategy, ratio,
patch size), run in this process one after the other and sharing one cache: the first trains
partition 0 and stores it, every later one should load it. A trial counts partition 0's seconds
itself (its first report's `compute_seconds`: set-up, partition 0, gallery, checkpoint; on a
hit, the load instead of the training), so trial k's saving is 1 - its partition-0 seconds /
the first trial's: 1.0 means all of partition 0 saved. `partition0_cache_saving` is the smallest
of them (the target: >= 0.8 in every trial after the first). Scoring runs in-process (no Ray),
in one torch thread (`resources.cpus_per_trial: 1`, as a sweep's in-process trial would).

    python -m smsweep.bench.cache_saving     # this measurement alone, one JSON line
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from smsweep.bench.timing import _progress, _threads

# sweeps/quickstart.yaml's data, model and pretraining, with 2 partitions and 2 fine-tuning
# steps (what follows partition 0 does not change what the cache saves)
SPEC: dict[str, Any] = {
    "name": "bench-partition0",
    "seed": 0,
    "data": {
        "image_size": 48,
        "num_classes": 5,
        "num_images": 256,
        "val_fraction": 0.25,
        "label_fraction": 0.25,
    },
    "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
    "pretrain": {"partitions": 2, "steps_per_partition": 40, "batch_size": 16, "lr": 0.002},
    "finetune": {"steps": 2, "evaluations": 1, "batch_size": 8},
    "resources": {"scoring_actors": 0, "train_workers": 0, "cpus_per_trial": 1},
}
# values the quickstart's search space gives masking.strategy, ratio and patch_size
SEARCHED = (
    {"strategy": "random", "ratio": 0.5, "patch_size": 8},
    {"strategy": "block", "ratio": 0.63, "patch_size": 4},
    {"strategy": "random", "ratio": 0.71, "patch_size": 12},
)


def measure_partition0_cache(searched=SEARCHED) -> dict[str, Any]:
    """One trial per entry of `searched`, sharing a cache: the savings of the later trials, the
    smallest as `partition0_cache_saving`, and the entries and size the cache ends with."""
    from smsweep.engines.trainloop import run_in_process
    from smsweep.spec.load import validate_spec
    from smsweep.trial import partition0

    seconds, hits = [], []
    _progress(f"partition-0 cache: {len(searched)} quickstart-sized trials, one repeat seed")
    with _threads(1), tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as storage:
        cache = Path(storage) / partition0.CACHE_DIR
        for number, masking in enumerate(searched):
            spec = validate_spec({**SPEC, "masking": masking})
            started = time.perf_counter()
            reports = run_in_process(spec, Path(storage) / f"trial{number}", partition0_cache=cache)
            first = reports[0].flat()
            seconds.append(float(first["compute_seconds"]))
            hits.append(int(first.get("partition0_cache_hit", 0)))
            _progress(
                f"  {masking}: partition 0 {seconds[-1]:.2f} s, hit {hits[-1]}, trial "
                f"{time.perf_counter() - started:.1f} s"
            )
        entries = partition0.listed(cache)
    savings = [1 - later / seconds[0] for later in seconds[1:]]
    return {
        "partition0_seconds": seconds[0],
        "partition0_cache_saving": min(savings) if savings else math.nan,
        "partition0_cache_savings": savings,
        "partition0_cache_hits": sum(hits[1:]),
        "partition0_cache_entries": len(entries),
        "partition0_entry_mb": entries[0].size / 1e6 if entries else math.nan,
    }


if __name__ == "__main__":
    json.dump(measure_partition0_cache(), sys.stdout)
    print()
