"""``python -m semproxy.train --config FILE``: the final training of a config (see semproxy/cli/train.py)."""
import sys

from semproxy.cli.train import main

sys.exit(main())
