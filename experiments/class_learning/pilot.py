"""Which fine-tuning protocol learns every synthetic class at the quickstart's size?

    python experiments/class_learning/pilot.py OUT.json [ARM ...]

Fine-tunes from random weights (masking.strategy none: fine-tuning is what is asked here) with
the quickstart's data, model and budget, on repeat seeds 0..2, one arm per protocol; prints each
run's mIoU and per-class IoU (last validation) and writes them to OUT.json. Environment:
SEEDS=0,1 (the repeat seeds), DATA="rare_share=0.5 augment=false" (data keys to set),
RARE_RADIUS=0.14,0.20 (the rare star's radius range, as a share of the side).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from smsweep.engines.trainloop import run_in_process
from smsweep.spec.load import load_spec, resolve

QUICKSTART = Path(__file__).resolve().parents[2] / "sweeps" / "quickstart.yaml"
ARMS = {
    "ce": {},
    "ce_dice_inv": {"finetune.loss": "ce_dice", "finetune.class_weights": "inverse_frequency"},
    "ce_inv": {"finetune.class_weights": "inverse_frequency"},
    "ce_dice_inv_900": {
        "finetune.loss": "ce_dice",
        "finetune.class_weights": "inverse_frequency",
        "finetune.steps": 900,
        "finetune.evaluations": 3,
    },
    "ce_dice_inv_noaug": {
        "finetune.loss": "ce_dice",
        "finetune.class_weights": "inverse_frequency",
        "data.augment": False,
    },
    "ce_dice_inv_rcs": {
        "finetune.loss": "ce_dice",
        "finetune.class_weights": "inverse_frequency",
        "finetune.rare_class_sampling": 0.1,
    },
}
SEEDS = (0, 1, 2)


def main(out: str, arms: list[str]) -> None:
    torch.set_num_threads(1)
    import os

    from smsweep.method.data import _synthetic

    if os.environ.get("RARE_RADIUS"):
        _synthetic.RARE_RADIUS = tuple(map(float, os.environ["RARE_RADIUS"].split(",")))
    seeds = tuple(map(int, os.environ.get("SEEDS", "0,1,2").split(",")))
    base = load_spec(
        QUICKSTART,
        [
            "masking.strategy=none",
            "resources.scoring_actors=0",
            "search.repeats=1",
            *(f"data.{key}" for key in os.environ.get("DATA", "").split() if key),
        ],
    )
    found = {}
    for arm in arms or list(ARMS):
        for repeat in seeds:
            spec = resolve(base, {**ARMS[arm], "repeat": repeat})
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as directory:
                last = run_in_process(spec, directory)[-1].flat()
            iou = {
                k.removeprefix("iou/"): round(v, 3) for k, v in last.items() if k.startswith("iou/")
            }
            found[f"{arm}/{repeat}"] = {"miou": round(last["miou"], 4), "iou": iou}
            print(
                arm,
                repeat,
                round(last["miou"], 4),
                iou,
                f"{time.perf_counter() - start:.0f}s",
                flush=True,
            )
            Path(out).write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
