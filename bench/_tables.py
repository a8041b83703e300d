"""Shared by the bench scripts: print a markdown table and write it under bench/results/."""
from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def publish(lines: list[str], out: str | Path) -> str:
    """Print the table and write it to ``out`` (folders created); returns the text."""
    table = "\n".join(lines)
    print(table)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(table + "\n")
    return table
