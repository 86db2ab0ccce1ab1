"""Generation: cached logits == uncached logits, the same tokens with and without the KV cache (greedy and
seeded top-p), nucleus filtering on a hand case, EOS, errors, and the command line on a saved checkpoint."""

from __future__ import annotations

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer, Tokenizer

from gem.generate import checkpoint_payload, generate, load_inference_checkpoint, main, sample_next
from gem.model import GemLM
from shared.checkpoint import save_checkpoint
from shared.config import config_to_dict
from shared.errors import ConfigError, DataError, run_cli
from tests.gem.model_helpers import FFNS, VOCAB, random_tokens, tiny_cfg, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "The patient reported chest pain after exercise.",
    "The court dismissed the appeal on procedural grounds.",
    "Quarterly revenue rose while operating costs fell.",
    "Water boils at one hundred degrees Celsius at sea level.",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES * 4, vocab_size=300, min_frequency=1, special_tokens=["<pad>", "<eos>"])
    return Tokenizer.from_str(bpe.to_str())


@pytest.mark.parametrize("ffn", FFNS)
def test_cached_logits_equal_uncached_logits(ffn: str) -> None:
    model = tiny_model(ffn).eval()
    idx = random_tokens(2, 12)
    with torch.no_grad():
        full = model(idx).logits  # (2, 12, V)
        out = model(idx[:, :5], use_cache=True)  # a 5-token prefill
        steps = [out.logits]
        past = out.past_kv
        out = model(idx[:, 5:8], past_kv=past, use_cache=True)  # a 3-token chunk after a cache
        steps.append(out.logits)
        past = out.past_kv
        for t in range(8, 12):  # then one token at a time
            out = model(idx[:, t : t + 1], past_kv=past, use_cache=True)
            past = out.past_kv
            steps.append(out.logits)
    cached = torch.cat(steps, dim=1)
    assert past[0][0].shape == (2, 2, 12, 16)
    assert torch.allclose(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ffn", FFNS)
def test_greedy_and_top_p_give_the_same_tokens_with_and_without_cache(ffn: str) -> None:
    model = tiny_model(ffn)
    prompt = random_tokens(2, 4)
    greedy = generate(model, prompt, 12, temperature=0.0)
    assert greedy.shape == (2, 16) and torch.equal(greedy[:, :4], prompt)
    assert torch.equal(greedy, generate(model, prompt, 12, temperature=0.0, use_cache=False))
    sampled = generate(model, prompt, 12, temperature=1.3, top_p=0.9, seed=7)
    assert torch.equal(
        sampled, generate(model, prompt, 12, temperature=1.3, top_p=0.9, seed=7, use_cache=False)
    )
    assert torch.equal(
        sampled, generate(model, prompt, 12, temperature=1.3, top_p=0.9, seed=7)
    )  # reproducible
    assert not torch.equal(sampled, generate(model, prompt, 12, temperature=1.3, top_p=0.9, seed=8))
    assert model.training  # the mode is restored


def test_nucleus_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits, temperature=1.0, top_p=0.7, generator=g)  # keeps {0, 1}: 0.5 < 0.7 <= 0.8
    counts = torch.bincount(draws, minlength=4)
    assert counts[2] == counts[3] == 0
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)
    assert (sample_next(logits, top_p=0.4, generator=g) == 0).all()  # the top token alone reaches 0.4
    all_four = torch.bincount(sample_next(logits, top_p=1.0, generator=g), minlength=4)
    assert (all_four > 0).all()
    assert (sample_next(logits, temperature=0.0) == 0).all()


def test_generation_stops_at_eos() -> None:
    model = tiny_model("scar")
    prompt = random_tokens(1, 3)
    free = generate(model, prompt, 10, temperature=0.0)
    eos = int(free[0, 5])  # the third generated token
    stopped = generate(model, prompt, 10, temperature=0.0, eos_token_id=eos)
    first = int((free[0, 3:] == eos).nonzero()[0]) + 3
    assert stopped.shape[1] == first + 1 and torch.equal(stopped[0], free[0, : first + 1])


def test_generation_errors() -> None:
    model = tiny_model("dense")
    with pytest.raises(ConfigError, match="context_length"):
        generate(model, random_tokens(1, 30), 5)
    with pytest.raises(ConfigError, match="top_p"):
        generate(model, random_tokens(1, 3), 5, top_p=0.0)
    with pytest.raises(DataError, match="prompt"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 5)


# ------------------------------------------------------------------------------------------------- CLI


def write_checkpoint(path, tokenizer: Tokenizer, ffn: str = "scar") -> GemLM:
    torch.manual_seed(0)
    model = GemLM(tiny_cfg(ffn, vocab_size=tokenizer.get_vocab_size(), context_length=48))
    config = {"experiment": "test", "model": config_to_dict(model.cfg), "train": {"lr": 1e-3}}
    torch.save(checkpoint_payload(model, config, tokenizer), path)
    return model


def test_cli_generates_from_a_checkpoint(tmp_path, tokenizer: Tokenizer, capsys) -> None:
    path = tmp_path / "best.pt"
    model = write_checkpoint(path, tokenizer)
    text = main(
        ["--checkpoint", str(path), "--prompt", "The patient", "--max-new-tokens", "8", "--temperature", "0"]
    )
    ids = tokenizer.encode("The patient").ids
    want = generate(
        model, torch.tensor([ids]), 8, temperature=0.0, eos_token_id=tokenizer.token_to_id("<eos>")
    )
    assert text == tokenizer.decode(want[0, len(ids) :].tolist())
    assert capsys.readouterr().out.strip() == ("The patient" + text).strip()
    sampled = [
        "--checkpoint",
        str(path),
        "--prompt",
        "The court",
        "--top-p",
        "0.8",
        "--seed",
        "3",
        "--max-new-tokens",
        "20",
    ]
    assert main(sampled) == main(sampled) == main([*sampled, "--no-cache"])


def test_checkpoint_written_by_shared_save_checkpoint_loads(tmp_path, tokenizer: Tokenizer) -> None:
    model = GemLM(tiny_cfg("moe", vocab_size=tokenizer.get_vocab_size()))
    cfg = {"model": config_to_dict(model.cfg)}
    last = save_checkpoint(
        tmp_path, model=model, epoch=1, step=3, config=cfg, extra={"tokenizer": tokenizer.to_str()}
    )
    loaded, tok, config = load_inference_checkpoint(last)
    assert config == cfg and tok.get_vocab_size() == tokenizer.get_vocab_size() and not loaded.training
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_errors_are_one_line(tmp_path, tokenizer: Tokenizer, capsys) -> None:
    argv = ["--prompt", "x", "--checkpoint"]
    assert run_cli(main, [*argv, str(tmp_path / "missing.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "config": {"model": {}}}, bad)
    assert run_cli(main, [*argv, str(bad)]) == 2
    assert "tokenizer" in capsys.readouterr().err
    torch.save({"model": {}, "config": {"model": {"scar_k_min": 9}}, "tokenizer": tokenizer.to_str()}, bad)
    assert run_cli(main, [*argv, str(bad)]) == 2
    assert "scar_k_min" in capsys.readouterr().err
    good = tmp_path / "good.pt"
    write_checkpoint(good, tokenizer)
    assert (
        run_cli(main, ["--prompt", "The patient", "--max-new-tokens", "60", "--checkpoint", str(good)]) == 2
    )
    err = capsys.readouterr().err
    assert "--max-new-tokens" in err and len(err.strip().splitlines()) == 1
    state = torch.load(good, weights_only=True)
    state["model"].pop("norm_f.weight")
    torch.save(state, bad)
    assert run_cli(main, [*argv, str(bad)]) == 2
    assert "weights do not match" in capsys.readouterr().err
