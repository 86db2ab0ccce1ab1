"""The arguments every train/evaluate entry point shares: ``--config``, ``--set``, ``--resume``, ``--debug``."""

from __future__ import annotations

import argparse


def common_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file (see the package's configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.lr=1e-3",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--resume", action="store_true", help="continue from last.pt of the run folder")
    parser.add_argument(
        "--run-dir", default=None, help="run folder (default: runs/<paper>/<experiment>/<timestamp>/)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser
