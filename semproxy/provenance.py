"""What a run was made from: package versions and the project's git commit (for run records and exports)."""
from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

__all__ = ["package_versions", "git_commit", "command_line"]

PACKAGES = ("semproxy", "torch", "torchvision", "timm", "ray", "optuna", "faiss-cpu", "faiss-gpu-cu12", "numpy")


def package_versions() -> dict[str, str]:
    """Python and the installed versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(path: Path = Path(__file__).resolve().parent) -> Optional[str]:
    """The commit of the checkout holding ``path`` (with '+dirty' for uncommitted changes), or None."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def command_line(drop: tuple[str, ...] = ()) -> str:
    """This process's command as one would type it again, less ``drop``: ``python tune.py ...`` for a script,
    ``python -m semproxy.train ...`` for a module run with ``-m`` (whose ``sys.argv[0]`` is the module's file
    path, which would run it outside its package), an installed command (``semproxy-train``) as it is."""
    argv = [a for a in sys.argv if a not in drop]
    return " ".join(shlex.quote(a) for a in (_program(argv[0]) + argv[1:] if argv else []))


def _program(argv0: str) -> list[str]:
    """How to start this program again: ``sys.argv[0]`` as typed, or ``python -m MODULE`` when it is the file
    of the module that ``python -m`` ran (the ``__spec__`` of ``__main__``; None for a script)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.origin and argv0 and Path(spec.origin).resolve() == Path(argv0).resolve():
        return ["python", "-m", spec.name.removesuffix(".__main__")]
    return ["python", argv0] if argv0.endswith(".py") else [argv0]
