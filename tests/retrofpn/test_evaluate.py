"""The evaluate command line on a tiny trained checkpoint: the same metrics as training's test_metrics.json,
saved predictions that give those metrics again, the validation split, and refused checkpoints / configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import retrofpn.evaluate
import retrofpn.train
from retrofpn.config import RetrofpnConfig
from retrofpn.data import load_scenes
from retrofpn.evaluate import metrics_of, split_scenes
from shared.checkpoint import save_checkpoint
from shared.config import load_config
from shared.errors import run_cli
from shared.metrics import ConfusionMatrix
from tests.retrofpn.train_helpers import write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One tiny PT + Retro-FPN run (2 epochs): its config and run folder."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("evaluate")
    config = write_config(tmp)
    run = tmp / "run"
    assert (
        run_cli(retrofpn.train.main, ["--config", str(config), "--device", "cpu", "--run-dir", str(run)]) == 0
    )
    torch.set_num_threads(n)
    return config, run


def evaluate(config: Path, checkpoint: Path, *args: str) -> int:
    argv = ["--config", str(config), "--checkpoint", str(checkpoint), "--device", "cpu", *args]
    return run_cli(retrofpn.evaluate.main, argv)


def test_evaluate_matches_the_training_test_metrics(trained, tmp_path, one_thread):
    config, run = trained
    out = tmp_path / "metrics.json"
    assert evaluate(config, run / "best.pt", "--out", str(out)) == 0
    test = json.loads((run / "test_metrics.json").read_text())
    evaluated = json.loads(out.read_text())
    assert (
        evaluated["split"] == "test"
        and evaluated["epoch"] == json.loads((run / "summary.json").read_text())["best_epoch"]
    )
    for key, value in test.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def test_saved_predictions_cover_every_point_and_give_the_metrics(trained, tmp_path, one_thread):
    config, run = trained
    out, preds = tmp_path / "m.json", tmp_path / "preds"
    assert evaluate(config, run / "best.pt", "--out", str(out), "--save-predictions", str(preds)) == 0
    cfg = load_config(RetrofpnConfig, config)
    scenes = load_scenes(cfg.data, "test")
    matrix = ConfusionMatrix(cfg.data.num_classes, cfg.data.ignore_index)
    for scene in scenes:
        pred = np.load(preds / f"{scene.name}.npy")
        assert pred.dtype == np.int16 and pred.shape == (len(scene),)
        matrix.update(
            torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(scene.segment.astype(np.int64))
        )
    again = metrics_of(matrix, cfg.data.class_names)
    evaluated = json.loads(out.read_text())
    assert again["miou"] == pytest.approx(evaluated["miou"]) and again["points"] == evaluated["points"]


def test_validation_split(trained, tmp_path, one_thread):
    config, run = trained
    out = tmp_path / "val.json"
    assert evaluate(config, run / "best.pt", "--split", "val", "--out", str(out)) == 0
    evaluated = json.loads(out.read_text())
    cfg = load_config(RetrofpnConfig, config)
    val = split_scenes(cfg)["val"]
    assert evaluated["split"] == "val" and evaluated["scenes"] == len(val) == 2
    labelled = sum(
        int((s.segment >= 0).sum()) for s in load_scenes(cfg.data, "train") if s.name in {r.name for r in val}
    )
    assert evaluated["points"] == labelled


def test_evaluate_refuses_another_papers_and_a_crafted_checkpoint(trained, tmp_path, capsys):
    config, _ = trained
    other = tmp_path / "other"
    save_checkpoint(other, model=torch.nn.Linear(2, 2), paper="rcar", epoch=1, step=1, config={"model": {}})
    assert evaluate(config, other / "last.pt") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rcar checkpoint, not a retrofpn one" in err
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model": Payload()}, tmp_path / "crafted.pt")
    assert evaluate(config, tmp_path / "crafted.pt") == 2
    assert "safe loading refuses" in capsys.readouterr().err and not marker.exists()


def test_a_config_of_other_data_is_refused_in_one_line(trained, tmp_path, capsys):
    _, run = trained
    other = write_config(tmp_path, name="five.yaml", data={"num_classes": 5, "class_names": list("abcde")},
                         model={"num_classes": 5})  # fmt: skip
    assert evaluate(other, run / "best.pt") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained with 13 classes" in err


def test_metrics_of_a_known_confusion_matrix():
    matrix = ConfusionMatrix(3, -1)
    matrix.update(torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 1, -1, 0]))
    m = metrics_of(matrix, ["a", "b", "c"])
    # truth a: 2 points (1 right), b: 3 points (2 right); c predicted once, never true
    assert m["iou"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3), "c": 0.0}
    assert m["acc"]["a"] == 0.5 and m["acc"]["b"] == pytest.approx(2 / 3) and np.isnan(m["acc"]["c"])
    assert m["points"] == 5 and m["points_per_class"] == {"a": 2, "b": 3, "c": 0}
    assert m["oa"] == pytest.approx(3 / 5) and m["miou"] == pytest.approx(1 / 3)
