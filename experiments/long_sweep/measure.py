"""A long sweep, measured: sweeps of tiny trials (default 10, 50 and 200), each in a fresh
directory, and for each the driver's resident memory after warm-up and at the end, its open file
descriptors, the sweep machinery's seconds per trial beyond the trials' own wall time, and the
dashboard's build time.

    python experiments/long_sweep/measure.py [--trials 10 50 200] [--out DIR]

Linux only (it reads /proc/self). Each size runs in its own process, so one size's memory does
not carry into the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

WARM_UP = 5  # trials finished before the "after warm-up" sample


def tiny_spec(trials: int) -> dict:
    """Trials of a few optimizer steps, two at a time, trained in their own processes."""
    return {
        "name": "long",
        "seed": 1,
        "data": {"image_size": 32, "num_classes": 4, "num_images": 24, "val_fraction": 0.25},
        "model": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 4]},
        "pretrain": {"partitions": 2, "epochs_per_partition": 1, "batch_size": 8},
        "masking": {"strategy": "random", "patch_size": 8},
        "finetune": {"epochs": 1, "batch_size": 8},
        "search": {
            "num_samples": trials,
            "max_concurrent": 2,
            "space": {"masking.ratio": {"uniform": [0.3, 0.7]}},
        },
        "resources": {"cpus_per_trial": 1, "train_workers": 0, "scoring_actors": 0},
        "tracking": {"mlflow_uri": "sqlite:///mlflow.db"},
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def one_size(trials: int, directory: Path) -> dict:
    """Run one sweep here (this process is its driver) and measure it."""
    from mlflow.tracking import MlflowClient

    from smsweep.checks import check_all
    from smsweep.report import build_report
    from smsweep.sweep import run_sweep

    os.chdir(directory)
    spec_file = directory / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(trials)))
    checked = check_all(spec_file, [])
    experiment = directory / "runs" / "long"
    samples: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        peak_fds = 0
        while not done.wait(0.5):
            finished = len(list(experiment.glob("train/*/result.json")))
            peak_fds = max(peak_fds, _fds())
            if finished >= min(WARM_UP, trials) and "rss_warm_mb" not in samples:
                samples.update(rss_warm_mb=_rss_mb(), fds_warm=_fds())
            if finished >= trials - 2 and "rss_last_mb" not in samples:  # before the summary
                samples.update(rss_last_mb=_rss_mb(), fds_last=_fds())
            samples["fds_peak"] = peak_fds

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    started = time.perf_counter()
    summary = run_sweep(checked.spec, storage="runs", source=checked.source, echo=lambda _: None)
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    samples |= {"rss_end_mb": _rss_mb(), "fds_end": _fds()}
    client = MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("long").experiment_id], max_results=10_000
    )
    trial_wall = sum(run.data.metrics.get("wall_seconds", 0.0) for run in runs)
    concurrent = 2
    built = time.perf_counter()
    report = build_report(experiment)
    report_seconds = time.perf_counter() - built
    return {
        "trials": trials,
        "finished": summary.finished,
        "sweep_seconds": round(wall, 1),
        "overhead_s_per_trial": round((wall - trial_wall / concurrent) / trials, 2),
        "report_seconds": round(report_seconds, 2),
        "report_mb": round(report.path.stat().st_size / 1e6, 2),
        **{k: round(v, 1) for k, v in samples.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--out", type=Path, help="keep the sweeps here (default: a temp dir)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.out)), flush=True)
        return 0
    root = args.out or Path(tempfile.mkdtemp(prefix="long_sweep_"))
    print(
        "trials  finished  sweep_s  overhead_s/trial  rss_warm_MB  rss_last_MB  rss_end_MB  "
        "fds_warm  fds_last  report_s  report_MB"
    )
    for trials in args.trials:
        directory = root / f"n{trials}"
        directory.mkdir(parents=True, exist_ok=False)
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(trials), "--out", str(directory)],
            capture_output=True,
            text=True,
        )
        if child.returncode:
            print(child.stdout[-2000:], child.stderr[-4000:], file=sys.stderr)
            return child.returncode
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"{row['trials']:>6}  {row['finished']:>8}  {row['sweep_seconds']:>7}  "
            f"{row['overhead_s_per_trial']:>16}  {row.get('rss_warm_mb', 'n/a'):>11}  "
            f"{row.get('rss_last_mb', 'n/a'):>11}  {row['rss_end_mb']:>10}  "
            f"{row.get('fds_warm', 'n/a'):>8}  {row.get('fds_last', 'n/a'):>8}  "
            f"{row['report_seconds']:>8}  {row['report_mb']:>9}",
            flush=True,
        )
        print("  " + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
