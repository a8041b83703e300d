"""``python -m semproxy.data``: see semproxy/cli/data.py."""
import sys

from semproxy.cli.data import main

sys.exit(main())
