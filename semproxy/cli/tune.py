"""semproxy's search: Optuna TPE through Ray Tune, ASHA early stopping on validation MAP@R.

    python tune.py --space search_spaces/vptsp.yaml --dataset cub200 --data-root ~/data/cub200
    python tune.py --space search_spaces/vptsp.yaml --smoke          # synthetic data, micro ViT, CPU
    python tune.py export runs/vptsp-cub200 -o experiments/cub200_best.yaml
    python tune.py report runs/vptsp-cub200                            # HTML report (+ PNGs)
    python tune.py compare --dataset cub200 --repeats 3                # methods, same budget, test intervals
    python -m semproxy.train --config experiments/cub200_best.yaml    # final training, test metrics
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Callable

from ..config import DataConfig
from ..errors import did_you_mean, short
from ..search.settings import SMOKE, SearchSettings, TrialResources, flag_label
from . import OneLineParser, program, run_command

__all__ = ["main", "search_parser", "export_parser", "report_parser", "dashboard_parser", "compare_parser"]

DATASETS = typing.get_args(typing.get_type_hints(DataConfig)["dataset"])


def _typed_flags(parser: argparse.ArgumentParser, section: type, default_note: str) -> None:
    """One flag per field of a typed settings class: its type, help text and default, from the class.

    A ``bool`` field is a switch, ``--name`` / ``--no-name`` (the latter turns off a space's ``true``).
    """
    hints = typing.get_type_hints(section)
    for f in dataclasses.fields(section):
        kind = typing.get_args(hints[f.name])
        choices = kind if typing.get_origin(hints[f.name]) is typing.Literal else None
        scalar = next((k for k in kind if k is not type(None)), hints[f.name]) if not choices else str
        default = "what fits the cluster" if f.default is None else (f.default if f.default != "" else "none")
        if hints[f.name] is bool:  # an on/off switch: --name or --no-name (None: not given)
            parser.add_argument(flag_label(f.name), action=argparse.BooleanOptionalAction, default=None,
                                help=f"{f.metadata['help']} (default: {default_note.format(name=f.name)}"
                                     f"{'on' if default else 'off'})")
            continue
        parser.add_argument(flag_label(f.name), type=scalar, choices=choices, default=None,
                            metavar=None if choices else {int: "N", float: "X"}.get(scalar, "VALUE"),
                            help=f"{f.metadata['help']} (default: {default_note.format(name=f.name)}{default})")


def _tune() -> str:
    """tune.py's name in usage lines and hints: ``python tune.py``, or ``semproxy-tune`` when that ran."""
    return program("python tune.py")


def _data_and_settings_flags(parser: argparse.ArgumentParser, spaces: str, settings_note: str) -> None:
    """``spaces``: what overrides the base config, with its verb ('the space overrides')."""
    parser.add_argument("--dataset", choices=DATASETS, help="benchmark (required; default with --smoke: synthetic)")
    parser.add_argument("--data-root", help="dataset folder (default: ./data/<dataset>)")
    parser.add_argument("--config", help=f"base config {spaces} (default: the dataset's experiments/ file)")
    _typed_flags(parser, SearchSettings, settings_note)
    _typed_flags(parser, TrialResources, "")


def _run_flags(parser: argparse.ArgumentParser, resume: str, smoke: str) -> None:
    """The cluster, the backbone, --resume (its help) and --smoke (what it shrinks)."""
    parser.add_argument("--address", help="attach to this running Ray cluster; 'auto' finds one started on this "
                                          "machine with 'ray start' (default: start a local cluster on 127.0.0.1)")
    parser.add_argument("--backbone", help="timm model name (default: the base config's)")
    parser.add_argument("--weights", help="local backbone weights file (default: the base config's)")
    parser.add_argument("--resume", action="store_true", help=resume)
    parser.add_argument("--smoke", action="store_true",
                        help=f"CI-sized {smoke} on synthetic data: " + ", ".join(f"{k} {v}" for k, v in SMOKE.items()))


def search_parser() -> argparse.ArgumentParser:
    tune = _tune()
    p = OneLineParser(prog=tune, description=__doc__.splitlines()[0],
                      epilog=f"Subcommands: {tune} export RUN_DIR -o FILE; {tune} report RUN_DIR; "
                             f"{tune} dashboard RUN_DIR; {tune} compare --dataset D")
    p.add_argument("--space", required=True, help="search-space YAML, e.g. search_spaces/vptsp.yaml")
    _data_and_settings_flags(p, "the space overrides", "the space's search.{name}, else ")
    p.add_argument("--name", help="run name; the run lives in STORAGE/NAME (default: <space>-<dataset>)")
    p.add_argument("--storage", help="folder where runs live, every node's when on a cluster (default: ./runs)")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="where the Optuna study lives: sqlite:///FILE, postgresql://..., mysql://... or "
                        "journal:FILE (default: sqlite:///RUN_DIR/study.db)")
    p.add_argument("--warm-start", metavar="RUN_DIR|URL[#STUDY]",
                   help="first try the best configurations of an earlier study that this space can represent "
                        "(default: none)")
    p.add_argument("--warm-top", type=int, default=5, metavar="K",
                   help="how many of the earlier study's best configurations (default: %(default)s)")
    _run_flags(p, "continue the run STORAGE/NAME with the same arguments (it trusts that folder like code)", "run")
    return p


def export_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{_tune()} export", description="Export a run's best config.")
    p.add_argument("run_dir", help="the search's run directory (runs/<name>)")
    p.add_argument("-o", "--output", required=True,
                   help="YAML file to write (required; an existing file only if it is an earlier export)")
    p.add_argument("--keep-validation", action="store_true",
                   help="keep the validation split (default: train on train + validation classes)")
    p.add_argument("--all-epochs", action="store_true",
                   help="train the trial's planned epochs (default: as many as its best validation epoch, on the "
                        "same learning-rate schedule)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--max-params", type=float, metavar="N",
                      help="multi-objective runs: the best validation MAP@R on the Pareto front with at most N "
                           "trainable parameters (default: the best validation MAP@R)")
    pick.add_argument("--pareto-index", type=int, metavar="I",
                      help="multi-objective runs: the I-th point of the Pareto front, 0 = highest validation "
                           "MAP@R (default: the best validation MAP@R)")
    return p


def dashboard_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{_tune()} dashboard",
                      description="Serve optuna-dashboard for a run's study (also while the search runs).")
    p.add_argument("run_dir", help="the search's run directory (runs/<name>)")
    p.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{_tune()} report", description="Write a run's HTML report.")
    p.add_argument("run_dir", help="the search's run directory (runs/<name>)")
    p.add_argument("-o", "--output", help="folder for report.html and its PNGs (default: RUN_DIR/report)")
    return p


def compare_parser() -> argparse.ArgumentParser:
    from ..search.compare import TABLE9

    p = OneLineParser(prog=f"{_tune()} compare",
                      description="Compare methods on one dataset: one search per space with the same budget, then "
                                  "each best configuration trained --repeats times with other seeds and tested; the "
                                  "table gives mean and 95% t-interval of the test metrics.")
    p.add_argument("--spaces", nargs="+", metavar="SPACE.yaml",
                   help="one space per method, each fixing its method (default: the paper's Table 9 spaces, "
                        f"{', '.join(TABLE9)}; lora.yaml is not in the paper, add it here)")
    p.add_argument("--repeats", type=int, default=3, metavar="R",
                   help="final runs per space, seeds --seed + 0 .. R-1 (default: %(default)s; 1 gives no interval)")
    _data_and_settings_flags(p, "the spaces override", "the spaces' shared search.{name}, else ")
    p.add_argument("--name", help="run name; the run lives in STORAGE/NAME (default: compare-<dataset>)")
    p.add_argument("--storage", help="folder where runs live (default: ./runs)")
    _run_flags(p, "continue the comparison STORAGE/NAME with the same arguments: finished parts are skipped",
               "searches")
    return p


def _compare(argv: list[str]) -> int:
    from ..search.compare import run_compare

    return run_compare(compare_parser().parse_args(argv))


def _export(argv: list[str]) -> int:
    from ..search.export import check_export_target, export_best

    args = export_parser().parse_args(argv)
    check_export_target(args.output)
    exported = export_best(args.run_dir, args.output, final=not args.keep_validation, all_epochs=args.all_epochs,
                           max_params=args.max_params, pareto_index=args.pareto_index)
    row = exported.row
    print(f"wrote {exported.path}: trial {row.trial_id}, val MAP@R {row.best_map_at_r:.4f} at epoch {row.best_epoch}; "
          f"trains {exported.epochs_note}")
    return 0


def _report(argv: list[str]) -> int:
    from ..search.report import write_report

    args = report_parser().parse_args(argv)
    print(f"wrote {write_report(args.run_dir, args.output)}")
    return 0


def _dashboard(argv: list[str]) -> int:
    from ..search.dashboard import serve

    args = dashboard_parser().parse_args(argv)
    serve(args.run_dir, args.host, args.port)
    return 0


def _search(argv: list[str]) -> int:
    from ..search.runner import run_search

    return run_search(search_parser().parse_args(argv))


RESUME = "resume with --resume (the same command plus --resume)"
#: tune.py's subcommands (a search when none is named), each with what to say when it is interrupted.
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "compare": (_compare, RESUME), "export": (_export, "nothing was written"),
    "report": (_report, "nothing was written"), "dashboard": (_dashboard, "nothing was written")}


def main(argv: list[str] | None = None) -> int:
    """tune.py: the subcommand named first, else a search; a first word that is neither (a search takes
    flags only) is a mistyped subcommand, refused before the search's parser would ask for --space."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"error: unknown command {short(argv[0])}{did_you_mean(argv[0], COMMANDS)}; the commands are "
              f"{', '.join(COMMANDS)}, or none for a search (see {_tune()} --help)", file=sys.stderr)
        return 2
    if argv[:1] and argv[0] in COMMANDS:
        command, interrupted = COMMANDS[argv[0]]
        return run_command(lambda: command(argv[1:]), interrupted)
    return run_command(lambda: _search(argv), RESUME)
