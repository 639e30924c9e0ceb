"""`python -m smsweep`: parse the command line and call the library; nothing else lives here.

Exit codes: 0 ok; 1 a runtime failure; 2 invalid input (a message that says what is wrong and how to
fix it, no traceback, nothing written); 130 interrupted (Ctrl-C); 143 stopped by SIGTERM (a
scheduler's preemption, see `signals`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path

from smsweep.errors import SpecError, TrackingUnavailable


def _bench_size(minimum: int, multiple: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < minimum or value % multiple:
            also = f" that is a multiple of {multiple}" if multiple > 1 else ""
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}{also}, got {text!r}"
            )
        return value

    return parse


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options (shared by `python -m smsweep bench` and `python -m smsweep.bench`)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument(
        "--skip-ray",
        action="store_true",
        help="measure the scorer and the training step only: no scoring actors, no trial (their "
        "keys are null), e.g. to measure a GPU machine's compute",
    )
    parser.add_argument(
        "--image-size",
        type=_bench_size(32, 16),
        default=64,
        help="image side in pixels for the scorer and train-step measurements (default 64, "
        "sized for 2 CPU cores; a GPU sits idle at this size, try 256 there)",
    )
    parser.add_argument(
        "--batch-size",
        type=_bench_size(1, 1),
        default=16,
        help="images per scorer call and per training step (default 16)",
    )


EXIT_OK, EXIT_FAILURE, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
DESCRIPTION = (
    "Sweeps of masked-image-modeling pretraining for segmentation: Ray Tune with Optuna searches "
    "a YAML spec (masking strategy, ratio, patch size, samples); every trial pretrains a U-Net "
    "partition by partition, fine-tunes it and reports mIoU; everything is tracked in MLflow and "
    "a stopped sweep resumes."
)
EPILOG = (
    "start with: python -m smsweep validate sweeps/quickstart.yaml, then run it. Exit codes: "
    "0 ok, 1 a runtime failure, 2 invalid input (nothing written), 130 interrupted, 143 stopped "
    "by SIGTERM."
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit 2, with a hint
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m smsweep", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="validate a sweep spec and run the sweep")
    run.add_argument("spec", type=Path, help="the sweep spec (YAML)")
    run.add_argument("--name", help="sweep name (default: the spec's `name`)")
    run.add_argument(
        "--storage",
        default="smsweep_runs",
        help="where the experiment lives, STORAGE/NAME: a directory (default: smsweep_runs; "
        "shared by every node on a cluster) or an object store, s3://BUCKET/PREFIX (endpoint "
        "and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; "
        "then search.storage must name the Optuna study's database)",
    )
    run.add_argument("--mlflow-uri", help="MLflow tracking URI (default: tracking.mlflow_uri)")
    run.add_argument("--address", help="an existing Ray cluster (default: RAY_ADDRESS or local)")
    _add_set(run)
    _add_output(run)

    resume = commands.add_parser("resume", help="resume a stopped or crashed sweep")
    resume.add_argument(
        "path", help="the experiment directory STORAGE/NAME (a path or s3://BUCKET/PREFIX/NAME)"
    )
    resume.add_argument("--address", help="an existing Ray cluster (default: RAY_ADDRESS or local)")
    _add_output(resume)

    validate = commands.add_parser("validate", help="check a sweep spec, its data and resources")
    validate.add_argument("spec", type=Path)
    _add_set(validate)

    report = commands.add_parser("report", help="build the sweep dashboard (HTML)")
    report.add_argument(
        "path", help="the experiment directory STORAGE/NAME (a path or s3://BUCKET/PREFIX/NAME)"
    )

    plan = commands.add_parser(
        "plan", help="repeats per arm (and their cost) to find an effect with 80%% power"
    )
    plan.add_argument(
        "path", help="the experiment directory STORAGE/NAME (a path or s3://BUCKET/PREFIX/NAME)"
    )
    plan.add_argument(
        "--effect",
        type=float,
        nargs="+",
        required=True,
        help="the effect(s) to find, in points of the ranked metric (2: 0.02 of mIoU)",
    )

    bench = commands.add_parser("bench", help="measure the scorer, train step and actor scaling")
    add_bench_arguments(bench)

    _add_cache(commands)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    synth = data_commands.add_parser("synth", help="write a generated set in folder format")
    synth.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    synth.add_argument("--n", type=int, required=True, help="number of images")
    synth.add_argument(
        "--kind",
        default="shapes",
        help="shapes (the `synthetic` source) or textures (the `textures` source); default shapes",
    )
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--num-classes", type=int, default=5)
    synth.add_argument("--seed", type=int, default=0)
    return parser


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return value


def _add_cache(commands) -> None:
    cache = commands.add_parser(
        "cache", help="list or prune the partition-0 cache that the sweeps of a storage share"
    )
    actions = cache.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    storage_help = (
        "the sweep storage that holds partition0/ (run's --storage; default smsweep_runs)"
    )
    listing = actions.add_parser("list", help="each entry's key, size, age and last use")
    listing.add_argument("storage", help=storage_help)
    prune = actions.add_parser("prune", help="delete entries no sweep has used for a while")
    prune.add_argument("storage", help=storage_help)
    which = prune.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--keep-days",
        type=_days,
        metavar="N",
        help="delete the entries unused for N days (safe beside running sweeps)",
    )
    which.add_argument(
        "--all",
        dest="everything",
        action="store_true",
        help="delete every entry (a running sweep's trials then train partition 0 again)",
    )


def _add_output(parser: argparse.ArgumentParser) -> None:
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "--quiet",
        action="store_true",
        help="print trial starts and ends and the summary only (no partition or validation lines)",
    )
    loudness.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray's, Tune's and MLflow's own log lines (off by default)",
    )


def _output(args: argparse.Namespace):
    from smsweep.report.console import Output

    return Output(
        quiet=args.quiet, verbose=args.verbose, live=not args.quiet and sys.stdout.isatty()
    )


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. masking.ratio=0.6",
    )


def main(argv: list[str] | None = None) -> int:
    from smsweep.engines import signals

    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
        # a sweep stopped by SIGTERM says so, whether Tune stopped it or it had just finished
        return signals.EXIT_TERMINATED if signals.received() else code
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        if signals.received():
            print("stopped by SIGTERM", file=sys.stderr)
            return signals.EXIT_TERMINATED
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrackingUnavailable as error:  # a runtime failure whose message says what to do
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:  # a runtime failure: show where, for a bug report
        traceback.print_exc()
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        from smsweep.checks import check_all, describe

        checked = check_all(args.spec, args.overrides)
        print(describe(checked))
        return EXIT_OK
    if args.command == "run":
        from smsweep.checks import check_all

        overrides = list(args.overrides)
        if args.name:
            overrides.append(f"name={args.name}")
        if args.mlflow_uri:
            overrides.append(f"tracking.mlflow_uri={args.mlflow_uri}")
        address = args.address or os.environ.get("RAY_ADDRESS")
        # With a cluster, run_sweep checks the resources against the cluster instead.
        capacity = (math.inf, math.inf) if address else None
        checked = check_all(args.spec, overrides, capacity=capacity)
        from smsweep.sweep import run_sweep

        summary = run_sweep(
            checked.spec,
            storage=args.storage,
            mlflow_uri=args.mlflow_uri,
            address=address,
            source=checked.source,
            output=_output(args),
        )
        return summary.exit_code
    if args.command == "resume":
        from smsweep.sweep import resume_sweep

        summary = resume_sweep(args.path, address=args.address, output=_output(args))
        return summary.exit_code
    if args.command == "report":
        from smsweep.report import main as report_main

        return report_main(args.path)
    if args.command == "plan":
        from smsweep.report.plan import plan_command

        print(plan_command(args.path, [effect / 100 for effect in args.effect]))
        return EXIT_OK
    if args.command == "cache":
        from smsweep.cache import list_command, prune_command

        if args.cache_command == "list":
            print(list_command(args.storage))
        else:
            print(prune_command(args.storage, args.keep_days, everything=args.everything))
        return EXIT_OK
    if args.command == "data":
        from smsweep.method.data.export import synth_command

        written = synth_command(
            args.out,
            n=args.n,
            image_size=args.image_size,
            num_classes=args.num_classes,
            seed=args.seed,
            kind=args.kind,
        )
        print(f"wrote {written} images to {args.out}/images and their masks to {args.out}/masks")
        return EXIT_OK
    if args.command == "bench":
        from smsweep.bench import main as bench_main

        return bench_main(
            json_output=args.json,
            skip_ray=args.skip_ray,
            image_size=args.image_size,
            batch_size=args.batch_size,
        )
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse allows no other
