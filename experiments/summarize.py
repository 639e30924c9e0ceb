"""The table of a study: its trials' final metrics, grouped by searched keys, mean ± std.

    python experiments/summarize.py --mlflow-uri sqlite:///experiments/runs/mlflow.db \
        --experiment selective_vs_random --by masking.strategy

Reads the finished trial runs (tag smsweep.role=trial) of one MLflow experiment, across all the
sweeps logged to it, and prints a Markdown table: one row per group, the number of trials, and
mean ± sample standard deviation of each metric.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict

from mlflow.tracking import MlflowClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mlflow-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--by", action="append", required=True, help="a param, e.g. masking.ratio")
    parser.add_argument(
        "--metric", action="append", default=None, help="default: miou and iou/rare_star"
    )
    args = parser.parse_args()
    metrics = args.metric or ["miou", "iou/rare_star"]
    client = MlflowClient(args.mlflow_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {args.experiment!r} at {args.mlflow_uri}")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`smsweep.role` = 'trial' and attributes.status = 'FINISHED'",
        max_results=10_000,
    )
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        groups[tuple(run.data.params.get(key, "?") for key in args.by)].append(run)
    header = [*args.by, "trials", *metrics]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key in sorted(groups, key=_sort_key):
        cells = [*key, str(len(groups[key]))]
        for metric in metrics:
            values = [r.data.metrics[metric] for r in groups[key] if metric in r.data.metrics]
            values = [v for v in values if not math.isnan(v)]
            cells.append(_mean_std(values))
        print("| " + " | ".join(cells) + " |")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _sort_key(key: tuple) -> tuple:
    return tuple((0, float(k)) if _is_number(k) else (1, k) for k in key)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
