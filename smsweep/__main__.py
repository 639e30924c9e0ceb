import sys

from smsweep.cli import main

sys.exit(main())
