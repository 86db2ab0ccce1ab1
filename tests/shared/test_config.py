"""shared.config (YAML + --set overrides onto typed dataclasses) and shared.cli."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from shared.cli import add_train_args, common_parser
from shared.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    read_yaml,
    save_config,
)
from shared.errors import ConfigError


@dataclass
class ModelSection:
    hidden: int = 8
    dropout: float = 0.1
    act: Literal["relu", "gelu"] = "relu"
    widths: list[int] = field(default_factory=lambda: [4, 4])
    ks: tuple[int, ...] = (1, 5, 10)


@dataclass
class TrainSection:
    lr: float = 0.1
    epochs: int = 2
    amp: bool = False
    name: str = "run"
    ckpt: str | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")


@dataclass
class Cfg:
    experiment: str = "exp"
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_yaml_keeps_defaults_and_types(tmp_path):
    path = _write(tmp_path, "experiment: e1\nmodel:\n  hidden: 32\n  act: gelu\ntrain:\n  lr: 1\n")
    cfg = load_config(Cfg, path)
    assert cfg.experiment == "e1"
    assert cfg.model == ModelSection(hidden=32, act="gelu")
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # an int is accepted for a float
    assert cfg.train.epochs == 2 and cfg.train.ckpt is None


def test_overrides_are_typed(tmp_path):
    path = _write(tmp_path, "train:\n  lr: 1e-3\n")  # YAML 1.1 would read 1e-3 as a string
    cfg = load_config(
        Cfg,
        path,
        [
            "train.epochs=7",
            "train.amp=true",
            "train.name=hello world",
            "train.ckpt=/x/best.pt",
            "train.weights={a: 1, b: 2.5}",
            "model.widths=[1, 2, 3]",
            "model.ks=[1, 2]",
            "model.dropout=2.5E-1",
            "experiment=e2",
        ],
    )
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.epochs == 7 and cfg.train.amp is True
    assert cfg.train.name == "hello world" and cfg.train.ckpt == "/x/best.pt"
    assert cfg.train.weights == {"a": 1.0, "b": 2.5}
    assert cfg.model.widths == [1, 2, 3] and cfg.model.ks == (1, 2)
    assert cfg.model.dropout == pytest.approx(0.25)
    assert cfg.experiment == "e2"
    assert load_config(Cfg, None, ["train.lr=-3e2"]).train.lr == pytest.approx(-300.0)
    assert load_config(Cfg, None, ["train.ckpt=null"]).train.ckpt is None
    assert load_config(Cfg, None, ["train.name="]).train.name == ""


def _one_line_error(cls, path, overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_names_key_and_lists_valid_ones(tmp_path):
    path = _write(tmp_path, "train:\n  lrr: 0.1\n")
    msg = _one_line_error(Cfg, path, [])
    assert "train.lrr" in msg and str(path) in msg
    for valid in ("amp", "ckpt", "epochs", "lr", "name", "weights"):
        assert valid in msg
    msg = _one_line_error(Cfg, None, ["model.hiden=3"])
    assert "model.hiden" in msg and "hidden" in msg and "dropout" in msg
    msg = _one_line_error(Cfg, None, ["optim.lr=3"])  # unknown section
    assert "optim" in msg and "experiment, model, train" in msg


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.epochs=abc", "train.epochs", "int"),
        ("train.epochs=2.5", "train.epochs", "int"),
        ("train.epochs=true", "train.epochs", "int"),  # bool is not an int here
        ("train.lr=fast", "train.lr", "float"),
        ("train.amp=1", "train.amp", "bool"),
        ("train.name=[1]", "train.name", "str"),
        ("model.act=tanh", "model.act", "relu"),
        ("model.widths=3", "model.widths", "list"),
        ("model.widths=[1, x]", "model.widths[1]", "int"),
        ("train.weights=[1]", "train.weights", "mapping"),
        ("model=3", "model", "mapping"),
        ("train.ckpt=3", "train.ckpt", "None"),
    ],
)
def test_wrong_type_names_key_and_expected_type(override, key, expected):
    msg = _one_line_error(Cfg, None, [override])
    assert f"{key}:" in msg and expected in msg


def test_fixed_length_tuple_and_post_init_errors():
    @dataclass
    class Pair:
        xy: tuple[int, float] = (1, 2.0)

    assert config_from_dict(Pair, {"xy": [3, 4]}).xy == (3, 4.0)
    with pytest.raises(ConfigError, match="expected 2 items"):
        config_from_dict(Pair, {"xy": [1, 2, 3]})
    msg = _one_line_error(Cfg, None, ["train.epochs=-1"])
    assert "train" in msg and "epochs must be >= 0" in msg


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.lr", "section.key=value"),
        ("=3", "empty key"),
        ("train.lr=[1, 2", "not valid YAML"),
        ("train.lr.x=3", "train.lr: expected float"),
    ],
)
def test_malformed_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Cfg, None, [override])


def test_apply_overrides_on_plain_dict():
    with pytest.raises(ConfigError, match="'b' is not a section"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2", "a.c.d=x", "e=1.5e3"]) == {
        "a": {"b": 2, "c": {"d": "x"}},
        "e": 1500.0,
    }


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")
    bad = _write(tmp_path, "train:\n  lr: [1, 2\n", "bad.yaml")
    msg = _one_line_error(Cfg, bad, [])
    assert "bad.yaml" in msg and "not valid YAML at line" in msg
    top = _write(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml(top)
    assert read_yaml(_write(tmp_path, "", "empty.yaml")) == {}


def test_save_config_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["train.lr=3e-4", "model.ks=[1, 5]", "train.weights={x: 0.5}"])
    d = config_to_dict(cfg)
    assert d["train"]["lr"] == pytest.approx(3e-4) and d["model"]["hidden"] == 8
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["weights"] == {"x": 0.5}
    assert load_config(Cfg, tmp_path / "config.yaml") == cfg
    assert config_from_dict(Cfg, d) == cfg


def test_cli_parsers():
    parser = add_train_args(common_parser("demo"))
    args = parser.parse_args(["--config", "c.yaml", "--set", "a.b=1", "--set", "c=2", "--resume", "--debug"])
    assert args.config == "c.yaml" and args.overrides == ["a.b=1", "c=2"]
    assert args.resume and args.debug and args.run_dir is None and args.device == "auto"
    args = parser.parse_args(["--config", "c.yaml", "--run-dir", "r", "--device", "cpu"])
    assert args.overrides == [] and not args.resume and args.run_dir == "r" and args.device == "cpu"
    with pytest.raises(SystemExit):
        common_parser("demo").parse_args([])  # --config is required


def test_trainer_writes_resolved_config_into_run_folder(tmp_path):
    from tests import tiny_train

    cfg_path = _write(tmp_path, "experiment: cfgtest\ntrain:\n  epochs: 1\n  num_samples: 32\n")
    run_dir = tmp_path / "run"
    tiny_train.main(["--config", str(cfg_path), "--run-dir", str(run_dir), "--set", "model.hidden=5"])
    saved = load_config(tiny_train.TinyConfig, run_dir / "config.yaml")
    assert saved == load_config(tiny_train.TinyConfig, cfg_path, ["model.hidden=5"])
    assert saved.model.hidden == 5 and saved.train.epochs == 1


class Size:
    """A user-defined annotation: values must already be instances (YAML cannot build one)."""


@dataclass
class Loose:
    anything: Any = None
    size: Size | None = None


def test_any_fields_accept_everything_and_other_types_are_checked():
    assert config_from_dict(Loose, {"anything": {"k": [1, "x"]}}).anything == {"k": [1, "x"]}
    with pytest.raises(ConfigError, match="size: expected"):
        config_from_dict(Loose, {"size": "big"})
    s = Size()
    assert config_from_dict(Loose, {"size": s}).size is s
