"""The table of a study: its arms over seeds, with intervals, paired differences and the MDE.

    python experiments/summarize.py --mlflow-uri sqlite:///experiments/runs/mlflow.db \
        --experiment selective_vs_random --by masking.strategy --by masking.refresh \
        --control masking.strategy=none \
        --control masking.strategy=random,masking.refresh=partition

Reads the finished trial runs (tag smsweep.role=trial) of one MLflow experiment, across all the
sweeps logged to it (a study may run one sweep per seed, or one sweep with `search.repeats`). An
arm is a combination of the `--by` params, or without `--by` the sweep's own arms (its
configurations and `search.controls`, from the trials' tags). Runs are paired by (`seed`,
`repeat`): the same seeds in every arm. For each arm: the number of paired seeds, each metric's
mean with its 95 % interval, and for each control the paired difference with its interval and
the protocol's minimum detectable effect (the true difference a paired t-test finds with 80 %
power at the comparison's alpha, after the family's correction), then the verdict sentences,
and where the trials ran `finetune.repeats: F` of 2 or more, the first metric's variance
components (between fine-tunes of one pretraining, and with the seed).
The numbers are `smsweep.verdict.stats.judge`, the ones a sweep prints and logs.
"""

from __future__ import annotations

import argparse
import math

from mlflow.tracking import MlflowClient

from smsweep.verdict.arms import CONFIGURATION, CONTROL
from smsweep.verdict.stats import ArmRun, Verdict, judge
from smsweep.verdict.variance import components, finetune_scores

DEFAULT_METRICS = ["miou", "pixel_accuracy", "floor/miou", "iou/rare_star"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mlflow-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument(
        "--by", action="append", default=[], help="a param, e.g. masking.ratio (default: arms)"
    )
    parser.add_argument(
        "--metric", action="append", default=None, help=f"default: {', '.join(DEFAULT_METRICS)}"
    )
    parser.add_argument(
        "--control",
        action="append",
        default=[],
        help="with --by: an arm to compare every arm with, as KEY=VALUE[,KEY=VALUE]",
    )
    parser.add_argument("--mode", choices=["max", "min"], default="max")
    args = parser.parse_args()
    if args.control and not args.by:
        raise SystemExit("--control names an arm by its --by params; give --by too")
    metrics = args.metric or DEFAULT_METRICS
    runs = load(args.mlflow_uri, args.experiment)
    verdicts = {
        metric: judge(rows(runs, args.by, args.control, metric), metric, args.mode)
        for metric in metrics
    }
    print(table(verdicts, metrics))
    first = verdicts[metrics[0]]
    if first.controls:
        print()
        print(comparisons(first))
    print()
    noise = components(
        [finetune_scores(run.data.metrics, metrics[0]) for run in runs], first.residual_sd
    )
    extra = [first.noise or "", noise.sentence() if noise else ""]
    print("\n".join(f"- {line}" for line in [*first.sentences(), *extra] if line))


def load(uri: str, experiment_name: str) -> list:
    """The experiment's finished trial runs."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {experiment_name!r} at {uri}")
    return client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`smsweep.role` = 'trial' and attributes.status = 'FINISHED'",
        max_results=10_000,
    )


def rows(runs: list, by: list[str], controls: list[str], metric: str) -> list[ArmRun]:
    """One `ArmRun` per run: its arm (the --by params, or its tags), its pairing index (seed and
    repeat) and its value of `metric`."""
    wanted = [_pairs(text, by) for text in controls]
    matched: dict[str, set[str]] = {text: set() for text in controls}
    found = []
    for run in runs:
        params, tags = run.data.params, run.data.tags
        pairing = int(params.get("seed", 0)) * 100 + int(params.get("repeat", 0))
        value = run.data.metrics.get(metric)
        value = None if value is None or math.isnan(value) else value
        if by:
            arm = {key: params.get(key, "?") for key in by}
            label = " / ".join(arm.values())
            control = next(
                (
                    text
                    for text, pairs in zip(controls, wanted, strict=True)
                    if all(arm[k] == v for k, v in pairs.items())
                ),
                None,
            )
            if control:
                matched[control].add(label)
            key = f"control:{control}" if control else label
            found.append(ArmRun(key, label, control, pairing, value))
        else:
            key = tags.get(CONFIGURATION, "?")
            label = params.get("masking.strategy", "?")
            found.append(ArmRun(key, label, tags.get(CONTROL), pairing, value))
    for text, labels in matched.items():
        if len(labels) != 1:
            raise SystemExit(
                f"--control {text!r} matches {len(labels)} arms ({', '.join(sorted(labels))}); "
                "name one arm"
            )
    return found


def table(verdicts: dict[str, Verdict], metrics: list[str]) -> str:
    first = verdicts[metrics[0]]
    header = ["arm", "seeds", *(f"{m} (95% CI)" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in first.configurations + first.controls:
        cells = [arm.name, str(len(arm.values))]
        for metric in metrics:
            same = [a for a in _arms(verdicts[metric]) if a.key == arm.key]
            cells.append(same[0].interval.show() if same and same[0].values else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparisons(verdict: Verdict) -> str:
    header = ["arm", "control", "paired seeds", f"Δ {verdict.metric}, points (95% CI)", "MDE"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    verdicts = []
    for control in verdict.controls:
        for arm in verdict.configurations:
            found = verdict.vs_controls[(arm.key, control.control or "")]
            d = found.difference
            lines.append(
                f"| {arm.name} | {control.name} | {d.n} | {d.show_points()} | "
                f"{100 * found.mde:.1f} |"
            )
            verdicts.append(found.verdict())
    return "\n".join(lines + [""] + [f"- {line}" for line in verdicts])


def _arms(verdict: Verdict) -> list:
    return verdict.configurations + verdict.controls


def _pairs(text: str, by: list[str]) -> dict[str, str]:
    pairs = dict(part.split("=", 1) for part in text.split(","))
    unknown = sorted(set(pairs) - set(by))
    if unknown:
        raise SystemExit(f"--control {text!r} names {unknown}, which are not --by keys {by}")
    return pairs


if __name__ == "__main__":
    main()
