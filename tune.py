#!/usr/bin/env python
"""semproxy's search: ``python tune.py --space search_spaces/vptsp.yaml --smoke`` (see semproxy/cli/tune.py).

Also installed as ``semproxy-tune``.
"""
import sys

from semproxy.cli.tune import export_parser, main, report_parser, search_parser

__all__ = ["main", "search_parser", "export_parser", "report_parser"]

if __name__ == "__main__":
    sys.exit(main())
