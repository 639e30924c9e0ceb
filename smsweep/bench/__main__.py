"""`python -m smsweep.bench [options]`: run the bench (as `python -m smsweep bench`)."""

import argparse
import sys

from smsweep import bench
from smsweep.cli import add_bench_arguments

parser = argparse.ArgumentParser(prog="python -m smsweep.bench", description=bench.__doc__)
add_bench_arguments(parser)
args = parser.parse_args()
sys.exit(
    bench.main(
        json_output=args.json,
        skip_ray=args.skip_ray,
        image_size=args.image_size,
        batch_size=args.batch_size,
    )
)
