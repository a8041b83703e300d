"""``python -m semproxy.evaluate --checkpoint DIR``: see semproxy/cli/evaluate.py (the library function
is :func:`semproxy.evaluation.evaluate_checkpoint`)."""
import sys

from semproxy.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
