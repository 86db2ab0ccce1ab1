"""The command lines every paper package shares: ``train``, ``evaluate`` and the config reference in ``--help``.

    python -m <paper>.train    --config C [--set section.key=value ...] [--run-dir D] [--resume] [--device auto]
    python -m <paper>.evaluate --config C --checkpoint P [--split test] [--out metrics.json] [--device auto]

``--help`` of both lists every config key with its type, default and meaning, read from the ``Attributes:``
block of each config dataclass's docstring (``config_reference``), so ``--set`` needs no look at config.py.

``--resume`` continues a run with the config saved in its folder (``config.yaml``); a ``--config`` or
``--set`` value that differs from the saved one is refused with one line naming the key, since the resumed
run would silently be a different experiment (start a new run instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from shared.config import apply_overrides, config_from_dict, config_to_dict, load_config, read_yaml, type_name
from shared.errors import ConfigError, TrainingError
from shared.log import latest_run_dir

T = TypeVar("T")

_FIELD_LINE = re.compile(r"^(\s+)([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """``{field: meaning}`` from the ``Attributes:`` block of a dataclass docstring (Google style).

    A line ``name: text`` starts an entry; more deeply indented lines continue it.
    """
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes:")
    except StopIteration:
        return {}
    docs: dict[str, str] = {}
    indent, current = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        match = _FIELD_LINE.match(line)
        if match and (indent is None or depth == indent):
            indent, current = depth, match.group(2)
            docs[current] = match.group(3).strip()
        elif current is not None and indent is not None and depth > indent:
            docs[current] += " " + line.strip()
        else:
            break
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_keys(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, meaning)`` for every leaf field of a nested config dataclass."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows: list[tuple[str, str, Any, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += config_keys(tp, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", type_name(tp), _default(f), docs.get(f.name, "")))
    return rows


def config_reference(cls: type) -> str:
    """The ``--help`` epilog: every key that ``--set`` accepts, with its type, default and meaning."""
    lines = ["config keys (--set section.key=value; YAML syntax for lists, e.g. [1, 2]):"]
    for key, tp, default, meaning in config_keys(cls):
        lines.append(f"  {key} ({tp}, default {default!r})")
        if meaning:
            lines.append(f"      {meaning}")
    return "\n".join(lines)


def _parser(description: str, config_cls: type | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        description=description,
        epilog=config_reference(config_cls) if config_cls is not None else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_config_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--config", required=required, default=None, help="YAML config file (see the package's configs/)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.lr=1e-3",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")


def common_parser(description: str, config_cls: type | None = None) -> argparse.ArgumentParser:
    """``--config`` (required), ``--set`` and ``--debug``; ``--help`` lists ``config_cls``'s keys."""
    parser = _parser(description, config_cls)
    _add_config_args(parser, required=True)
    return parser


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--resume", action="store_true", help="continue the run folder's last.pt with its saved config.yaml"
    )
    parser.add_argument(
        "--run-dir", default=None, help="run folder (default: runs/<paper>/<experiment>/<timestamp>/)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser


def train_parser(description: str, config_cls: type) -> argparse.ArgumentParser:
    """The train command line; ``--config`` may be left out with ``--resume --run-dir D``."""
    parser = _parser(description, config_cls)
    _add_config_args(parser, required=False)
    return add_train_args(parser)


def evaluate_parser(
    description: str, config_cls: type, splits: Sequence[str] = ("val", "test")
) -> argparse.ArgumentParser:
    """The evaluate command line shared by every package (same flags, same defaults)."""
    parser = common_parser(description, config_cls)
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by the train command")
    parser.add_argument(
        "--split", choices=list(splits), default="test", help="split to score (default: test)"
    )
    parser.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def run_folder_name(cfg: Any) -> str:
    """The experiment folder under ``runs/<paper>/``: ``cfg.run_name()`` when defined, else ``cfg.experiment``."""
    return cfg.run_name() if hasattr(cfg, "run_name") else cfg.experiment


def resume_config(config_cls: type[T], run_dir: Path, requested: dict[str, Any] | None) -> T:
    """The config saved in ``run_dir/config.yaml``; refuse any requested value that differs from it.

    ``requested`` is the nested dict of values the command line asked for (the ``--config`` file with the
    ``--set`` overrides applied, or the overrides alone when there is no ``--config``).
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise TrainingError(
            f"cannot resume {run_dir}: it has no config.yaml; start a new run without --resume"
        )
    saved = config_to_dict(config_from_dict(config_cls, read_yaml(path)))
    flat_saved = _flatten(saved)
    if requested:
        wanted = _flatten(config_to_dict(config_from_dict(config_cls, requested)))
        asked = _flatten(requested)
        for key in sorted(asked):
            if key in flat_saved and wanted.get(key) != flat_saved[key]:
                raise ConfigError(
                    f"--resume continues {run_dir} with its saved config, where {key} = {flat_saved[key]!r}, "
                    f"but {wanted.get(key)!r} was asked for; drop that setting or start a new run"
                )
    return config_from_dict(config_cls, saved)


def resolve_train_config(config_cls: type[T], args: argparse.Namespace, paper: str) -> tuple[T, Path | None]:
    """The config and run folder a train command runs with (the saved config when resuming)."""
    if not args.resume:
        if args.config is None:
            raise ConfigError("--config is required (only --resume --run-dir D can do without it)")
        return load_config(config_cls, args.config, args.overrides), args.run_dir
    requested: dict[str, Any] = read_yaml(args.config) if args.config else {}
    apply_overrides(requested, list(args.overrides))
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        if args.config is None:
            raise ConfigError(
                "--resume needs --run-dir D or the --config of the run to find its newest folder"
            )
        cfg = load_config(config_cls, args.config, args.overrides)
        run_dir = latest_run_dir(cfg.train.runs_root, paper, run_folder_name(cfg))
    return resume_config(config_cls, run_dir, requested), run_dir


def train_main(
    paper: str,
    config_cls: type[T],
    train: Callable[..., dict[str, Any]],
    description: str,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Parse the train command line and call ``train(cfg, run_dir=, resume=, device=)``."""
    args = train_parser(description, config_cls).parse_args(argv)
    cfg, run_dir = resolve_train_config(config_cls, args, paper)
    return train(cfg, run_dir=run_dir, resume=args.resume, device=args.device)


def write_json_out(text: str, out: str | None) -> None:
    """Print a metrics JSON and, with ``--out``, write it to that file too."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
