"""Warm starts: a new search begins with the best configurations of an earlier study.

``--warm-start SOURCE [--warm-top K]`` takes the K best finished trials (by validation MAP@R) of the
study of an earlier run folder, or of a storage URL (``URL#STUDY`` where it holds several), and
enqueues those the new space can represent: each earlier point is completed with the new base
config's values for what it did not sample, then must lie in the new space. The ones dropped are
named with the reason (another dataset, an earlier space, a narrower range).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import SearchError
from .record import RECORD_FILE, SearchRecord
from .space import SearchSpace
from .study import load_study, run_study

__all__ = ["WarmStart", "warm_start"]


@dataclass
class WarmStart:
    """What a warm start enqueues, and what it dropped and why."""

    source: str
    points: list[dict[str, Any]]
    dropped: list[str]

    def summary(self) -> str:
        dropped = f"; dropped {len(self.dropped)}: {'; '.join(self.dropped)}" if self.dropped else ""
        return f"warm start from {self.source}: {len(self.points)} configuration(s) enqueued{dropped}"


def _source_study(source: str) -> tuple[Any, str]:
    """The study named by ``source`` (a run folder, ``URL`` or ``URL#STUDY``) and how to name it."""
    folder = Path(source).expanduser()
    if (folder / RECORD_FILE).is_file():
        record = SearchRecord.read(folder)
        return load_study(*run_study(folder, record.study), where="--warm-start"), str(folder)
    if folder.exists() or "://" not in source and not source.startswith("journal:"):
        raise SearchError(f"--warm-start {source}: neither a semproxy run folder ({RECORD_FILE} not found) nor "
                          f"a storage URL (sqlite:///..., postgresql://..., journal:PATH)")
    import optuna

    from .study import open_storage

    url, _, name = source.partition("#")
    if not name:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(url, where="--warm-start"))]
        if len(names) != 1:
            raise SearchError(f"--warm-start {url}: holds {len(names)} studies ({', '.join(names) or 'none'}); "
                              f"name one as {url}#STUDY")
        name = names[0]
    return load_study(url, name, where="--warm-start"), f"{url}#{name}"


def warm_start(source: str, top: int, space: SearchSpace, base: Config) -> WarmStart:
    """The ``top`` best finished configurations of ``source`` that ``space`` can represent."""
    import optuna

    study, shown = _source_study(source)
    finished = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.values]
    best = sorted(finished, key=lambda t: t.values[0], reverse=study.directions[0].name == "MAXIMIZE")[:top]
    points, dropped = [], []
    for trial in best:
        point, why = space.locate({**base.flat(), **trial.params})
        if point is None:
            dropped.append(f"trial {trial.number} ({why})")
        elif point not in points:
            points.append(point)
    return WarmStart(shown, points, dropped)
