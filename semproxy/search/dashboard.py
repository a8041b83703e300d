"""``tune.py dashboard RUN_DIR``: optuna-dashboard for a run's study, on this machine only by default.

The study is a database (SQLite in the run folder unless ``--optuna-storage`` put it on a server),
so the dashboard can be opened while the search runs: it reads what the driver has written.
"""
from __future__ import annotations

import logging
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from ..errors import SearchError
from .record import SearchRecord
from .study import load_study, run_study

__all__ = ["serve", "make_dashboard_server"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # one line per request would drown the console
        pass


def make_dashboard_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080):
    """A WSGI server of optuna-dashboard for ``run_dir``'s study (``port`` 0: any free port)."""
    import optuna_dashboard

    record = SearchRecord.read(run_dir)
    url, name = run_study(Path(run_dir), record.study)
    load_study(url, name, where=f"{run_dir}: study")  # there, readable: else one line
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        return make_server(host, port, optuna_dashboard.wsgi(url), handler_class=_QuietHandler)
    except OSError as error:
        raise SearchError(f"dashboard: cannot listen on {host}:{port} ({error.strerror or error})") from None


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until Ctrl-C."""
    server = make_dashboard_server(run_dir, host, port)
    print(f"optuna-dashboard of {run_dir}: http://{host}:{server.server_port}/   (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped")
    finally:
        server.server_close()
