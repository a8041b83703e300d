"""``python -m semproxy.models``: see semproxy/cli/params.py."""
import sys

from semproxy.cli.params import main

sys.exit(main())
