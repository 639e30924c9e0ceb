"""`python -m smsweep.bench [--json]`: run the bench (the same as `python -m smsweep bench`)."""

import argparse
import sys

from smsweep import bench

parser = argparse.ArgumentParser(prog="python -m smsweep.bench", description=bench.__doc__)
parser.add_argument("--json", action="store_true", help="print one JSON object last")
sys.exit(bench.main(json_output=parser.parse_args().json))
