"""The Optuna study of a search, kept in a real database the user can open, share and build on.

By default a search writes its study into ``RUN_DIR/study.db`` (SQLite: embedded, nothing to start);
``--optuna-storage URL`` puts it on a server (PostgreSQL or MySQL, e.g. for a cluster) or in Optuna's
journal file (``journal:PATH``). The study is named after the run. Opening a storage is checked
before Ray starts, so an unreachable server or a missing driver is a one-line error. Reading a
study never executes anything: it is a database, not a pickle.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from ..errors import SearchError, first_line

__all__ = ["run_study", "STUDY_FILE", "storage_url", "open_storage", "load_study", "check_new_study"]

STUDY_FILE = "study.db"


def storage_url(run_dir: Path, given: Optional[str] = None) -> str:
    """The study's storage URL: ``given``, else the SQLite file in the run folder."""
    return given if given else f"sqlite:///{Path(run_dir).resolve() / STUDY_FILE}"


def run_study(run_dir: Path, recorded: Optional[dict[str, str]]) -> tuple[str, str]:
    """(storage URL, study name) of a run: as its record names them, else the SQLite file in the run
    folder and the folder's name (what a search without ``--optuna-storage`` uses)."""
    recorded = recorded or {}
    return recorded.get("storage") or storage_url(run_dir), recorded.get("name") or Path(run_dir).name


def open_storage(url: str, *, where: str = "--optuna-storage") -> Any:
    """An Optuna storage for ``url``, connected; anything that stops it is a one-line SearchError."""
    import optuna

    logging.getLogger("optuna").setLevel(logging.WARNING)  # "A new study created ..." is no news here
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = Path(url.removeprefix("journal:")).expanduser()
            if not path.parent.is_dir():
                raise SearchError(f"{where} {url}: folder {path.parent} does not exist")
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except SearchError:
        raise
    except ImportError as error:
        raise SearchError(f"{where} {url}: needs a database driver that is not installed "
                          f"({first_line(error)})") from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy, network and URL errors alike
        raise SearchError(f"{where} {url}: cannot open ({type(error).__name__}: {first_line(error)})") from None


def check_new_study(storage: Any, name: str, url: str) -> None:
    """A new search must not write into an existing study of the same name (a shared server)."""
    import optuna

    if any(summary.study_name == name for summary in optuna.get_all_study_summaries(storage)):
        raise SearchError(f"--optuna-storage {url} already holds a study named '{name}'; pass --resume to "
                          f"continue that search or choose another --name")


def load_study(url: str, name: str, *, where: str) -> Any:
    """An existing study, for reading (the report, the dashboard, a warm start)."""
    import optuna

    storage = open_storage(url, where=where)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SearchError(f"{where} {url}: no study named '{name}' (it holds: {', '.join(names) or 'none'})") \
            from None
