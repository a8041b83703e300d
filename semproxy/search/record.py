"""The run record (``search.json``): what a search was made of, written once, checked on resume.

The driver writes it before the first trial: the command line, the space as written and as
resolved, the base config, the search settings, the objective, the backbone's identity, the
dataset's fingerprint, package versions and the git commit. ``export`` copies it into the exported
config's header; ``--resume`` compares the resuming command's record with it and refuses a resume
that would change what the run is (another space, dataset, base config, objective or setting).
It is plain JSON: reading it never executes anything.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..atomic import write_text_atomic
from ..checkpoint import RUNTIME_FIELDS
from ..config import Config, ConfigError
from ..metric_names import OBJECTIVE, OBJECTIVE_MODE
from ..typed_config import short
from .objectives import Constraint
from .settings import SearchSettings

__all__ = ["RECORD_FILE", "SearchRecord"]

RECORD_FILE = "search.json"


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists), so records compare like for like."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class SearchRecord:
    """Everything that defines a search run; see the module docstring."""

    command: str
    cwd: str
    space: str
    space_text: str
    space_resolved: list[dict[str, Any]]
    base: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    starts: list[dict[str, Any]]
    metric: str
    mode: str
    backbone: dict[str, str]
    data: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: Optional[str] = None
    study: Optional[dict[str, str]] = None  # the Optuna study: {"storage": URL, "name": ...}

    def __post_init__(self) -> None:
        # Settings a record predates (or leaves out) read as their defaults.
        self.settings = {**SearchSettings().to_mapping(), **self.settings}

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        """The run's constraints (``--constraints``), which its best trial keeps."""
        return SearchSettings(**self.settings).constraint_specs

    @property
    def dataset(self) -> str:
        return self.data.get("dataset") or self.base.get("data", {}).get("dataset", "?")

    # -- files ---------------------------------------------------------------------------------
    def write(self, run_dir: Path) -> Path:
        return write_text_atomic(Path(run_dir) / RECORD_FILE, json.dumps(_plain(dataclasses.asdict(self)), indent=2)
                                 + "\n")

    @classmethod
    def read(cls, run_dir: str | Path) -> "SearchRecord":
        """The record of ``run_dir``; a missing or damaged one is a one-line ConfigError."""
        path = Path(run_dir) / RECORD_FILE
        if not path.is_file():
            raise ConfigError(f"{run_dir}: not a semproxy search run ({RECORD_FILE} not found)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: damaged run record ({type(error).__name__}: {short(str(error))})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: damaged run record (not a JSON object)")
        raw.setdefault("metric", OBJECTIVE)  # records written before these were kept
        raw.setdefault("mode", OBJECTIVE_MODE)
        if isinstance(raw.get("settings"), dict) and "seed" in raw:
            raw["settings"].setdefault("seed", raw.pop("seed"))
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in raw and cls.__dataclass_fields__[n].default is dataclasses.MISSING
                         and cls.__dataclass_fields__[n].default_factory is dataclasses.MISSING)
        if missing:
            raise ConfigError(f"{path}: damaged run record (no '{missing[0]}')")
        return cls(**{k: v for k, v in raw.items() if k in names})

    def base_config(self, where: str = RECORD_FILE) -> Config:
        return Config.from_mapping(self.base, where=f"{where} (base)")

    # -- resume ---------------------------------------------------------------------------------
    def differences(self, other: "SearchRecord") -> list[str]:
        """What ``other`` (the resuming command's record) would change, as short phrases; [] when none.

        Where a run executes may change (data root, cache, device, workers, weights file path:
        the backbone's weights hash is compared instead, and the data's file list relative to its
        folder where both records hash it so); what it searches may not.
        """
        changes = []
        if _plain(self.space_resolved) != _plain(other.space_resolved):
            changes.append(f"space {self.space} -> {other.space}" if self.space != other.space
                           else f"space {self.space} (its contents changed)")
        if self.dataset != other.dataset:
            changes.append(f"dataset {self.dataset} -> {other.dataset}")
        elif _plain(self.data.get("counts")) != _plain(other.data.get("counts")):
            changes.append(f"the {self.dataset} data (class and image counts differ)")
        elif (self.data.get("paths") == other.data.get("paths") == "relative"
              and self.data.get("files_sha256") != other.data.get("files_sha256")):
            before, after = (str(r.data.get("files_sha256"))[:12] for r in (self, other))
            changes.append(f"the {self.dataset} data (its image files or labels differ: files_sha256 "
                           f"{before}... -> {after}...)")
        if self.backbone.get("sha256") != other.backbone.get("sha256"):
            changes.append(f"backbone {self.backbone.get('name')} -> {other.backbone.get('name')} (weights differ)")
        ours, theirs = self.base_config().flat(), other.base_config().flat()
        changes += [f"base config {key} {short(ours[key])} -> {short(theirs.get(key))}"
                    for key in sorted(ours) if key not in RUNTIME_FIELDS and ours[key] != theirs.get(key)]
        changes += [f"{key} {short(value)} -> {short(other.settings.get(key))}"
                    for key, value in sorted(self.settings.items()) if other.settings.get(key) != value]
        if (self.metric, self.mode) != (other.metric, other.mode):
            changes.append(f"objective {self.mode} {self.metric} -> {other.mode} {other.metric}")
        if self.study and other.study and self.study.get("storage") != other.study.get("storage"):
            changes.append(f"study storage {self.study.get('storage')} -> {other.study.get('storage')}")
        return changes
