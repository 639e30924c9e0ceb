"""The table of a study: its arms over seeds, with intervals, paired differences and the MDE.

    python experiments/summarize.py --mlflow-uri sqlite:///experiments/runs/mlflow.db \
        --experiment selective_vs_random --by masking.strategy --by masking.refresh \
        --control masking.strategy=none \
        --control masking.strategy=random,masking.refresh=partition

Reads the finished trial runs (tag smsweep.role=trial) of one MLflow experiment, across all the
sweeps logged to it (one per seed). An arm is a combination of the `--by` params; a seed is the
trial's `seed` param. For each arm: the number of seeds, each metric's mean with its 95 %
interval over seeds, and for each `--control` arm the paired difference (same seeds) with its
interval and the protocol's minimum detectable effect (2 x the std of the paired differences).
The statistics are `smsweep.stats`, the ones the sweep itself uses.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

from mlflow.tracking import MlflowClient

from smsweep.stats import compare, mean_interval

Arm = tuple[str, ...]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mlflow-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--by", action="append", required=True, help="a param, e.g. masking.ratio")
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="default: miou, pixel_accuracy, floor/miou and iou/rare_star",
    )
    parser.add_argument(
        "--control",
        action="append",
        default=[],
        help="an arm to compare every arm with, as KEY=VALUE[,KEY=VALUE]",
    )
    args = parser.parse_args()
    metrics = args.metric or ["miou", "pixel_accuracy", "floor/miou", "iou/rare_star"]
    values = load(args.mlflow_uri, args.experiment, args.by, metrics)
    print(table(values, args.by, metrics))
    controls = [_control_arm(text, args.by, list(values)) for text in args.control]
    if controls:
        print()
        print(comparisons(values, controls, metrics[0]))


def load(
    uri: str, experiment_name: str, by: list[str], metrics: list[str]
) -> dict[Arm, dict[str, dict[int, float]]]:
    """arm -> metric -> seed -> the trial's last value."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {experiment_name!r} at {uri}")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`smsweep.role` = 'trial' and attributes.status = 'FINISHED'",
        max_results=10_000,
    )
    values: dict[Arm, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        arm = tuple(run.data.params.get(key, "?") for key in by)
        seed = int(run.data.params.get("seed", -1))
        for metric in metrics:
            value = run.data.metrics.get(metric)
            if value is not None and not math.isnan(value):
                values[arm][metric][seed] = value
    return values


def table(values: dict[Arm, dict[str, dict[int, float]]], by: list[str], metrics: list[str]) -> str:
    header = [*by, "seeds", *(f"{m} (95% CI)" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in sorted(values, key=_sort_key):
        seeds = {seed for per_seed in values[arm].values() for seed in per_seed}
        cells = [*arm, str(len(seeds))]
        cells += [mean_interval(list(values[arm][m].values())).show() for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparisons(
    values: dict[Arm, dict[str, dict[int, float]]], controls: list[Arm], metric: str
) -> str:
    header = ["arm", "control", "paired seeds", f"Δ {metric}, points (95% CI)", "MDE, points"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    verdicts = []
    for control in controls:
        for arm in sorted(values, key=_sort_key):
            if arm == control:
                continue
            found = compare(
                _name(arm), values[arm][metric], _name(control), values[control][metric]
            )
            d = found.difference
            interval = f"{100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
            lines.append(
                f"| {_name(arm)} | {_name(control)} | {d.n} | {interval} | {100 * found.mde:.1f} |"
            )
            verdicts.append(found.verdict())
    return "\n".join(lines + [""] + [f"- {verdict}" for verdict in verdicts])


def _control_arm(text: str, by: list[str], arms: list[Arm]) -> Arm:
    """The one arm whose --by params take the KEY=VALUE pairs of `text`."""
    pairs = dict(part.split("=", 1) for part in text.split(","))
    unknown = sorted(set(pairs) - set(by))
    if unknown:
        raise SystemExit(f"--control {text!r} names {unknown}, which are not --by keys {by}")
    matching = [arm for arm in arms if all(arm[by.index(k)] == v for k, v in pairs.items())]
    if len(matching) != 1:
        raise SystemExit(
            f"--control {text!r} matches {len(matching)} arms ({', '.join(map(_name, matching))}); "
            "name one arm"
        )
    return matching[0]


def _name(arm: Arm) -> str:
    return " / ".join(arm)


def _sort_key(arm: Arm) -> tuple:
    return tuple((0, float(k)) if _is_number(k) else (1, k) for k in arm)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
