"""Pin a refactor: the reports of a few tiny trials, to compare before and after a change.

    python experiments/trial_pin/pin.py before.json      # on the commit before
    python experiments/trial_pin/pin.py after.json       # on the commit after
    cmp before.json after.json                           # bit for bit on one machine

Tiny in-process trials (selective scored in-process, random, none, contrastive, MRM, validations
that fall mid-pass, and a partition-0 cache miss then hit), one torch thread; every report's
numbers and words but its timings. Floats are compared exactly, so compare on one machine:
another CPU may round differently.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.test_trial

from tests.test_trial import tiny_spec

try:
    from smsweep.engines.trainloop import run_in_process
except ImportError:  # a commit before the layered layout
    from smsweep.trainloop import run_in_process

IN_PROCESS = {"scoring_actors": 0, "train_workers": 0}
ONE_DRAW = {"strategy": "random", "samples": 1}


def kept(report) -> dict:
    return {
        key: value
        for key, value in sorted(report.flat().items())
        if isinstance(value, int | float | str)
        and "seconds" not in key
        and "ms_per" not in key
        and not key.startswith("cost/")
    }


def main(out: str) -> None:
    torch.set_num_threads(1)
    cases = {
        "selective": tiny_spec(resources=IN_PROCESS),
        "random": tiny_spec(resources=IN_PROCESS, masking=ONE_DRAW),
        "none": tiny_spec(resources=IN_PROCESS, masking={"strategy": "none"}),
        "contrastive": tiny_spec(
            resources=IN_PROCESS, masking=ONE_DRAW, pretrain={"objective": "contrastive"}
        ),
        "mrm": tiny_spec(resources=IN_PROCESS, masking=ONE_DRAW, mrm={"enabled": True}),
        # validations mid-pass: 7 fine-tuning steps of 3 a pass, 2 validations
        "mid_pass": tiny_spec(
            resources=IN_PROCESS,
            masking=ONE_DRAW,
            finetune={"epochs": None, "steps": 7, "evaluations": 2},
        ),
    }
    found = {}
    for name, spec in cases.items():
        with tempfile.TemporaryDirectory() as directory:
            found[name] = [kept(report) for report in run_in_process(spec, directory)]
        print(name, found[name][-1].get("miou"), flush=True)
    with tempfile.TemporaryDirectory() as cache:
        for attempt in range(2):  # a miss that stores partition 0, then a hit
            with tempfile.TemporaryDirectory() as directory:
                reports = run_in_process(cases["selective"], directory, partition0_cache=cache)
            found[f"cached{attempt}"] = [kept(report) for report in reports]
    Path(out).write_text(json.dumps(found, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
