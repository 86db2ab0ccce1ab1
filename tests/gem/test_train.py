"""gem.train on a tiny suite built from the data fixtures: the run folder, resume (= the uninterrupted run), the
NaN guard, config errors, specialists from a generalist checkpoint, distillation (teacher frozen; alpha = 0 is
plain fine-tuning), held-out adaptation, the mixture sampler, the schedule, generation from a trained
checkpoint, DDP under torchrun."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gem.generate
import gem.model
import gem.train
from gem.config import GemConfig
from gem.evaluate import load_data
from gem.model import count_params
from shared.checkpoint import load_checkpoint
from shared.config import config_from_dict, load_config
from shared.distributed import DistInfo
from shared.errors import run_cli
from shared.log import read_metrics
from tests.gem.train_helpers import ROOT, build_tiny_suite, tiny_config, write_config
from tests.resume import killed_then_resumed

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_tiny_suite(tmp_path_factory.mktemp("suite"))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def train(config: Path, *args: str) -> int:
    return run_cli(gem.train.main, ["--config", str(config), "--device", "cpu", *args])


def config(tmp_path: Path, data: dict, name: str = "cfg.yaml", **sections: dict) -> Path:
    return write_config(tmp_path / name, tiny_config(data, tmp_path / "runs", **sections))


@pytest.fixture(scope="module")
def generalist(tmp_path_factory: pytest.TempPathFactory, data: dict) -> Path:
    """A tiny SCAR generalist trained on the seven training domains (its run folder)."""
    tmp = tmp_path_factory.mktemp("generalist")
    assert train(config(tmp, data), "--run-dir", str(tmp / "run")) == 0
    return tmp / "run"


def strip_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_time_s"} for r in records]


# ----------------------------------------------------------------------------------------- run folder
def test_generalist_run_folder_metrics_and_checkpoint(generalist: Path, data: dict):
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "test_metrics.json"):
        assert (generalist / name).is_file(), name
    records = read_metrics(generalist / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [4, 8]
    assert {"train_loss", "train_lm", "train_ce", "val_score", "val_ppl", "val_f1", "lr"} <= set(records[0])
    summary = json.loads((generalist / "summary.json").read_text())
    test = json.loads((generalist / "test_metrics.json").read_text())
    assert summary["test"] == test and summary["paper"] == "gem" and summary["ffn"] == "scar"
    best = max(records, key=lambda r: r["val_score"])
    assert (summary["best_epoch"], summary["val_score"]) == (best["epoch"], best["val_score"])
    cfg = config_from_dict(
        GemConfig, json.loads(json.dumps(load_checkpoint(generalist / "best.pt")["config"]))
    )
    suite, tok = load_data(cfg)
    assert summary["domains"] == suite.training_domains and "review_sentiment" not in summary["tasks"]
    # test scores: every domain's perplexity (held-out included), each scored task, MMLU where present
    assert set(test["ppl"]) == set(suite.domains) and all(1 < p < 320 for p in test["ppl"].values())
    assert set(test["mc_accuracy"]) == {"mmlu_healthcare", "mmlu_law", "mmlu_stem"}
    assert test["examples"]["icd10_chapter"] == 20  # eval.max_examples caps the 171 test titles
    for d, util in test["router_utilisation"].items():
        shares = np.asarray(util)  # (routed layers, paths), each layer's assignments sum to 1
        assert shares.shape == (2, 4) and np.allclose(shares.sum(1), 1.0), d
        assert 1.0 <= test["mean_k"][d] <= 2.0
    assert summary["active_params"] < summary["params"]  # a token runs at most 2 of the 4 paths
    # the checkpoint carries the tokenizer and what it was trained on (the teacher of a distillation reads it)
    extra = load_checkpoint(generalist / "best.pt", paper="gem")["extra"]
    assert extra["tokenizer"] == tok.tk.to_str() and extra["trained_tasks"] == summary["tasks"]


def test_generate_cli_continues_a_prompt_from_the_trained_checkpoint(generalist: Path, capsys):
    argv = ["--checkpoint", str(generalist / "best.pt"), "--prompt", "Cholera", "--max-new-tokens", "6"]
    first = gem.generate.main([*argv, "--temperature", "0"])
    again = gem.generate.main([*argv, "--temperature", "0", "--no-cache"])
    out = capsys.readouterr().out.splitlines()
    assert first == again and out[0].startswith("Cholera") and out[0] == "Cholera" + first


# --------------------------------------------------------------------------------------- resume, guards
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, data: dict, monkeypatch):
    cfg = config(tmp_path, data, train={"epochs": 3})
    full, cut, test_full, test_cut = killed_then_resumed(train, gem.train, cfg, tmp_path, 2, monkeypatch)
    assert cut == full and len(full) == 3 and test_full == test_cut


def test_nan_guard_names_the_step(tmp_path: Path, data: dict, capsys):
    assert train(config(tmp_path, data, train={"nan_at_step": 5})) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "at step 5" in errors[0]  # (the lines before it are the run's log)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.bogus=1", "unknown config key 'model.bogus'"),
        ("train.domains=[nowhere]", "train.domains: unknown domain 'nowhere'"),
        ("train.lr=-1", "train.lr must be > 0"),
        ("model.vocab_size=300", "model.vocab_size=300 is smaller than the tokenizer's 320 tokens"),
        ("model.context_length=16", "model.context_length=16 is shorter than data.context_len"),
        ("distill.alpha=0.5", "distill.alpha > 0 needs a teacher"),
        ("train.init_from=nowhere.pt", "no checkpoint at nowhere.pt"),
        ("eval.val_domains=some", "eval.val_domains: expected one of ['all', 'trained']"),
    ],
)
def test_bad_configs_exit_2_with_one_line_and_no_run_folder(
    tmp_path: Path, data: dict, capsys, override, message
):
    assert train(config(tmp_path, data), "--set", override) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    base = tmp_path / "runs" / "gem" / "tiny"
    assert not base.exists() or list(base.iterdir()) == []


# ------------------------------------------------------------------------------ specialists, distillation
def test_specialist_starts_from_the_generalist_weights(tmp_path: Path, data: dict, generalist: Path, capsys):
    init = ["--set", f"train.init_from={generalist / 'best.pt'}", "--set", "train.domains=[law]"]
    # a learning rate of ~0: the specialist's weights are the generalist's
    assert (
        train(config(tmp_path, data), *init, "--set", "train.lr=1e-12", "--run-dir", str(tmp_path / "s")) == 0
    )
    gen = load_checkpoint(generalist / "best.pt")["model"]
    spec = load_checkpoint(tmp_path / "s" / "best.pt")["model"]
    assert max(float((gen[k] - spec[k]).abs().max()) for k in gen) < 1e-6
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["domains"] == ["law"] and summary["tasks"] == ["licence_osi"]
    # its validation scored the trained domain only when eval.val_domains=trained
    capsys.readouterr()
    argv = [*init, "--set", "eval.val_domains=trained", "--run-dir", str(tmp_path / "t")]
    assert train(config(tmp_path, data), *argv) == 0
    assert set(read_metrics(tmp_path / "t" / "metrics.jsonl")[0]["val_ppl"]) == {"law"}
    # another architecture than the generalist's is refused, naming the key
    capsys.readouterr()
    assert train(config(tmp_path, data), *init, "--set", "model.d_model=64") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was trained with model.d_model=32" in err


def test_distillation_freezes_the_teacher_and_alpha_zero_is_plain_fine_tuning(
    tmp_path: Path, data: dict, generalist: Path, monkeypatch
):
    best = generalist / "best.pt"
    base = ["--set", f"train.init_from={best}", "--set", "train.domains=[healthcare]"]
    teachers = []
    load = gem.train.load_teacher
    monkeypatch.setattr(gem.train, "load_teacher", lambda *a: teachers.append(load(*a)) or teachers[-1])
    assert train(config(tmp_path, data), *base, "--run-dir", str(tmp_path / "plain")) == 0
    with_teacher = [*base, "--set", f"distill.teacher={best}", "--set", "distill.alpha=0"]
    assert train(config(tmp_path, data), *with_teacher, "--run-dir", str(tmp_path / "zero")) == 0
    kd = [*base, "--set", "distill.alpha=0.7"]
    assert train(config(tmp_path, data), *kd, "--run-dir", str(tmp_path / "kd")) == 0
    assert teachers[0] is None and teachers[1] is not None and teachers[2] is not None
    plain, zero, dist = (read_metrics(tmp_path / r / "metrics.jsonl") for r in ("plain", "zero", "kd"))
    assert strip_time(zero) == strip_time(plain)  # the teacher ran, with weight 0
    assert dist[0]["train_loss"] != plain[0]["train_loss"]
    # the teacher stayed frozen: requires_grad off and its weights those of the generalist checkpoint
    gen = load_checkpoint(best)["model"]
    for teacher in teachers[1:]:
        assert teacher.tasks == set(json.loads((generalist / "summary.json").read_text())["tasks"])
        assert not any(p.requires_grad for p in teacher.model.parameters())
        assert all(torch.equal(v, gen[k]) for k, v in teacher.model.state_dict().items())


def test_objective_with_a_teacher_at_alpha_zero_equals_the_plain_objective(data: dict, tmp_path: Path):
    cfg = config_from_dict(GemConfig, tiny_config(data, tmp_path))
    suite, tok = load_data(cfg)
    cfg, _ = gem.train.resolve_config(cfg, suite, tok)
    batch_data = gem.train.build_train_data(cfg, suite, tok, suite.training_domains)
    plan = gem.train.draw_epoch(cfg, batch_data, 0, 1, 1)
    batch = gem.train.step_batch(cfg, batch_data, plan, 0, CPU, tok.pad_id)
    torch.manual_seed(0)
    model, teacher = gem.model.GemLM(cfg.model), gem.model.GemLM(cfg.model)  # a different, random teacher
    t = gem.train.Teacher(teacher.eval(), set(batch_data.tasks), "both")
    t_lm, t_cls = t.logits(batch, torch.device("cpu"), False)
    grads = []
    for alpha, logits in ((0.0, (None, None)), (0.0, (t_lm, t_cls)), (0.7, (t_lm, t_cls))):
        c = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, alpha=alpha))
        model.zero_grad()
        loss = gem.train.MixtureObjective(model, c)(batch["lm"], batch["cls"], *logits)["loss"]
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert grads[0][0] == grads[1][0] and all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))
    assert grads[2][0] > grads[0][0]  # KL(random teacher || student) > 0


def test_adaptation_to_the_held_out_domain(tmp_path: Path, data: dict, generalist: Path):
    argv = ["--set", f"train.init_from={generalist / 'best.pt'}", "--set", "train.domains=[domain_adaptive]"]
    assert train(config(tmp_path, data), *argv, "--run-dir", str(tmp_path / "a")) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["tasks"] == ["review_sentiment"] and summary["domains"] == ["domain_adaptive"]
    before = json.loads((generalist / "test_metrics.json").read_text())["ppl"]["domain_adaptive"]
    assert summary["test"]["ppl"]["domain_adaptive"] < before  # it read the held-out domain's text


def test_benchmark_tasks_from_jsonl_and_lm_eval_yaml_join_the_mixture(tmp_path: Path, data: dict):
    bench = ROOT / "tests" / "fixtures" / "gem" / "benchmarks"
    tasks = [str(bench / f) for f in ("financial_phrasebank.jsonl", "pubmedqa_local.yaml", "piqa_local.yaml")]
    cfg = config(tmp_path, data | {"extra_tasks": tasks}, train={"epochs": 1})
    assert train(cfg, "--run-dir", str(tmp_path / "b")) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    # a task without a domain is its own domain; pubmedqa_local is healthcare's second task
    assert "financial_phrasebank" in summary["domains"] and {"financial_phrasebank", "pubmedqa_local"} <= set(
        summary["tasks"]
    )
    test = summary["test"]
    assert set(test["f1"]) >= {"financial_phrasebank", "pubmedqa_local", "icd10_chapter"}
    assert test["domain_f1"]["healthcare"] == pytest.approx(
        (test["f1"]["icd10_chapter"] + test["f1"]["pubmedqa_local"]) / 2
    )
    assert test["mc_examples"]["piqa_local"] == 2


@pytest.mark.parametrize("name", ["suite", "paper_scale", "benchmarks"])
def test_shipped_configs_load(name: str):
    cfg = load_config(GemConfig, ROOT / "gem" / "configs" / f"{name}.yaml")
    assert cfg.model.vocab_size == cfg.data.vocab_size == 4096  # the tokenizer `make data-gem` builds
    if name == "paper_scale":
        assert (
            23e6 < count_params(cfg.model) < 26e6 and cfg.data.context_len == cfg.model.context_length == 512
        )
    if name == "benchmarks":
        assert len(cfg.data.extra_tasks) == 8 and all(t.startswith("data/gem/") for t in cfg.data.extra_tasks)


# -------------------------------------------------------------------------------- sampler and schedule
def test_epoch_draw_is_seeded_and_ranks_split_the_global_batch(data: dict, tmp_path: Path):
    cfg = config_from_dict(GemConfig, tiny_config(data, tmp_path))
    suite, tok = load_data(cfg)
    cfg, _ = gem.train.resolve_config(cfg, suite, tok)
    d = gem.train.build_train_data(cfg, suite, tok, suite.training_domains)
    a, b = gem.train.draw_epoch(cfg, d, 1, 6, 2), gem.train.draw_epoch(cfg, d, 1, 6, 2)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("lm_domain", "lm_block", "cls_task"))
    assert not np.array_equal(a.lm_block, gem.train.draw_epoch(cfg, d, 2, 6, 2).lm_block)
    assert a.lm_domain.shape == (6, 8) and a.cls_task.shape == (6, 8)  # 2 ranks x batch 4
    assert (a.lm_block < np.asarray(d.lm_blocks)[a.lm_domain]).all()
    assert (a.cls_example < np.asarray([len(c) for c in d.cls])[a.cls_task]).all()
    ranks = [gem.train.step_batch(cfg, d, a, 0, DistInfo(r, 2, r, torch.device("cpu")), 0) for r in (0, 1)]
    lm = torch.cat([r["lm"] for r in ranks])
    T = cfg.data.context_len
    want = torch.stack(
        [d.lm_streams[i][j * T : j * T + T + 1] for i, j in zip(a.lm_domain[0], a.lm_block[0])]
    )
    assert torch.equal(lm, want)  # rank 0 takes the first half of the global batch, rank 1 the second
    assert sum(c["labels"].numel() for r in ranks for _, c in r["cls"]) == 8
    p = gem.train.sampling_probs([1, 4, 16], 0.5)
    assert np.allclose(p, np.array([1, 2, 4]) / 7) and np.allclose(gem.train.sampling_probs([1, 3], 0.0), 0.5)


def test_warmup_then_cosine_schedule():
    f = [gem.train.lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5) and f[110] == pytest.approx(0.1)
    assert all(x >= y for x, y in itertools.pairwise(f[9:]))


# -------------------------------------------------------------------------------------------------- DDP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path: Path, data: dict):
    """2-process DDP training; its gathered test metrics equal a single-process evaluation of best.pt."""
    cfg = config(tmp_path, data)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "gem.train", "--config", str(cfg), "--run-dir", str(tmp_path / "ddp"), "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert len(read_metrics(tmp_path / "ddp" / "metrics.jsonl")) == 2
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "gem.evaluate", "--config", str(cfg), "--checkpoint", str(tmp_path / "ddp" / "best.pt"),
           "--out", str(out), "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads(out.read_text())
    for key in ("ppl", "f1", "mc_accuracy", "mean_k"):
        for name, value in test[key].items():
            assert evaluated[key][name] == pytest.approx(value, abs=1e-6), (key, name)
