#!/usr/bin/env python
"""semproxy's search: Optuna TPE through Ray Tune, ASHA early stopping on validation MAP@R.

    python tune.py --space search_spaces/vptsp.yaml --dataset cub200 --data-root ~/data/cub200
    python tune.py --space search_spaces/vptsp.yaml --smoke          # synthetic data, micro ViT, CPU
    python tune.py export runs/vptsp-cub200 -o experiments/cub200_best.yaml
    python tune.py report runs/vptsp-cub200                            # HTML report (+ PNGs)
    python -m semproxy.train --config experiments/cub200_best.yaml    # final training, test metrics
"""
from __future__ import annotations

import argparse
import sys


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tune.py", description=__doc__.splitlines()[0],
                                epilog="Subcommands: python tune.py export RUN_DIR -o FILE; python tune.py report RUN_DIR")
    p.add_argument("--space", required=True, help="search-space YAML (search_spaces/*.yaml)")
    p.add_argument("--dataset", choices=["cub200", "cars196", "sop", "inshop", "inat", "synthetic"],
                   help="benchmark (default with --smoke: synthetic)")
    p.add_argument("--data-root", help="dataset folder (default ./data/<dataset>)")
    p.add_argument("--config", help="base config the space overrides (default: the dataset's experiments/ file)")
    p.add_argument("--num-samples", type=int, help="trials (default: the space's, else 16)")
    p.add_argument("--max-epochs", type=int, help="epochs of a full trial, ASHA's max_t (default 15)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPU fraction per trial, e.g. 0.25")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial")
    p.add_argument("--max-concurrent", type=int, help="cap on concurrent trials (default: what fits)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], help="early stopping (default asha)")
    p.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, help="ASHA: keep 1 / this at each rung")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--name", help="run name (default <space>-<dataset>); the run lives in STORAGE/NAME")
    p.add_argument("--storage", help="where runs live: a local path or a URI shared by all nodes (default ./runs)")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--backbone", help="timm model name (overrides the base config)")
    p.add_argument("--weights", help="local backbone weights file")
    p.add_argument("--max-failures", type=int, default=0, help="restarts of a crashed trial from its checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run STORAGE/NAME")
    p.add_argument("--smoke", action="store_true", help="CI-sized run: 6 trials x 4 epochs on synthetic data")
    return p


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tune.py export", description="Export a run's best config.")
    p.add_argument("run_dir", help="the search's run directory (runs/<name>)")
    p.add_argument("-o", "--output", required=True, help="YAML file to write")
    p.add_argument("--keep-validation", action="store_true",
                   help="keep the validation split (default: train on train + validation classes)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        args = export_parser().parse_args(argv[1:])
        from semproxy.config import ConfigError
        from semproxy.search.results import export_best

        try:
            path, row = export_best(args.run_dir, args.output, final=not args.keep_validation)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {path}: trial {row.trial_id}, val MAP@R {row.best_map_at_r:.4f}")
        return 0
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog="python tune.py report", description="Write a run's HTML report.")
        parser.add_argument("run_dir", help="the search's run directory (runs/<name>)")
        parser.add_argument("-o", "--output", help="folder for report.html and its PNGs (default RUN_DIR/report)")
        args = parser.parse_args(argv[1:])
        from semproxy.config import ConfigError
        from semproxy.search.report import write_report

        try:
            print(f"wrote {write_report(args.run_dir, args.output)}")
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    from semproxy.search.runner import run_search

    return run_search(search_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
