"""The frozen-encoder probe beside the fine-tune, in one trial (`finetune.probe: true`).

    python experiments/probe/measure.py OUT.json [KEY=VALUE ...]

The quickstart's data, model and budgets, in this process (no Ray): random-masking pretraining
and the control `none` (random weights), each on repeat seeds 0..2, every trial with a probe.
Prints and writes each trial's last validation: the fine-tune's mIoU, the probe's, their rare
class's IoU and the trial's seconds, so the two protocols' spreads over seeds sit side by side.
KEY=VALUE arguments override the quickstart's keys (e.g. data.augment=false).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from smsweep.engines.trainloop import run_in_process
from smsweep.spec.load import load_spec, resolve
from smsweep.verdict.stats import mean_interval, minimum_detectable_effect, paired_differences

QUICKSTART = Path(__file__).resolve().parents[2] / "sweeps" / "quickstart.yaml"
ARMS = {"none": {"masking.strategy": "none"}, "random": {"masking.strategy": "random"}}


def main(out: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    seeds = tuple(map(int, os.environ.get("SEEDS", "0,1,2").split(",")))
    base = load_spec(
        QUICKSTART,
        ["resources.scoring_actors=0", "search.repeats=1", "finetune.probe=true", *overrides],
    )
    found = {}
    for arm, settings in ARMS.items():
        for repeat in seeds:
            spec = resolve(base, {**settings, "repeat": repeat})
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as directory:
                last = run_in_process(spec, directory)[-1].flat()
            row = {
                key: round(last[key], 4)
                for key in ("miou", "probe/miou", "iou/rare_star", "probe/iou/rare_star")
            }
            row["seconds"] = round(time.perf_counter() - start)
            found[f"{arm}/{repeat}"] = row
            print(arm, repeat, row, flush=True)
            Path(out).write_text(json.dumps(found, indent=1))
    summarize(found, seeds)


def summarize(found: dict[str, dict[str, float]], seeds: tuple[int, ...]) -> None:
    """Per protocol: each arm's mean with its 95 % interval, random minus none seed by seed
    (mean, interval, and the MDE at this n: 80 % power at alpha 0.05), in points."""
    for metric in ("miou", "probe/miou"):
        arms = {arm: {s: found[f"{arm}/{s}"][metric] for s in seeds} for arm in ARMS}
        means = ", ".join(
            f"{arm} {mean_interval(list(v.values())).show(100, 1)}" for arm, v in arms.items()
        )
        differences = paired_differences(arms["random"], arms["none"])
        print(
            f"{metric}: {means}; random - none {mean_interval(differences).show_points()}, "
            f"MDE {100 * minimum_detectable_effect(differences):.1f} points at n={len(seeds)}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
