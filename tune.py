#!/usr/bin/env python
"""semproxy's search driver: Optuna TPE through Ray Tune, ASHA on validation MAP@R.

Not built yet: the search system is its own issue (it needs the training loop first). Until then
this entry point says so and exits with status 2, so no script mistakes it for a finished search.
"""
import sys


def main() -> int:
    print("tune.py: the search is not implemented yet; see README.md (Status) for what runs today",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
