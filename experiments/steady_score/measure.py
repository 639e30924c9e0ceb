"""Which score is steadier: the last validation, or the mean of the last k?

    python experiments/steady_score/measure.py OUT.json [SEEDS]

The quickstart's data, model and fine-tuning budget (300 steps, 6 validations), fine-tuned
from scratch (the control `none`: what is measured here is the fine-tune's own noise) with
`finetune.repeats: 4` on each repeat seed: 4 fine-tunes that differ only in their head
initialisation and batch order. For each seed, the sd across its 4 fine-tunes of (a) the last
validation's mIoU and (b) the mean of the last 2 and 3 validations; pooled over the seeds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from smsweep.engines.trainloop import run_in_process
from smsweep.spec.load import load_spec, resolve

QUICKSTART = Path(__file__).resolve().parents[2] / "sweeps" / "quickstart.yaml"
FINETUNES = 4


def main(out: str, seeds: int) -> None:
    torch.set_num_threads(1)
    base = load_spec(
        QUICKSTART,
        ["masking.strategy=none", "resources.scoring_actors=0", "search.repeats=1"],
    )
    found = {}
    for repeat in range(seeds):
        spec = resolve(base, {"finetune.repeats": FINETUNES, "repeat": repeat})
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            reports = [r.flat() for r in run_in_process(spec, directory)]
        curves = [[r[f"finetune/{f}/miou"] for r in reports] for f in range(FINETUNES)]
        found[repeat] = curves
        print(repeat, f"{time.perf_counter() - start:.0f}s", [c[-1] for c in curves], flush=True)
    Path(out).write_text(json.dumps(found, indent=1))
    for k in (1, 2, 3):
        variances = [
            statistics.variance([statistics.fmean(curve[-k:]) for curve in curves])
            for curves in found.values()
        ]
        pooled = 100 * math.sqrt(statistics.fmean(variances))
        print(f"last {k}: sd across fine-tunes {pooled:.2f} points")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
