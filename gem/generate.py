"""Text generation with GEM's LM: greedy and nucleus (top-p) sampling, with or without the KV cache.

``generate`` follows nanoGPT's ``generate`` loop and HF's ``past_key_values`` decoding: with the cache the
prompt is run once and each further step feeds only the newest token, whose routing (SCAR or MoE) is decided
for that token alone, exactly as in a full forward. Nucleus sampling is Holtzman et al. (arXiv 1904.09751):
keep the fewest most-probable tokens whose probability sums to at least p, renormalise, sample.

The command line reads a checkpoint written by ``gem.train`` (layout below) and prints the continuation:

    python -m gem.generate --checkpoint runs/gem/.../best.pt --prompt "The patient" --max-new-tokens 40

Checkpoint layout (a dict loadable with ``torch.load(weights_only=True)``):
    "model":     the ``GemLM`` state_dict
    "config":    the resolved top-level config as a dict; its "model" section is a ``ModelConfig``
    "tokenizer": the ``tokenizers.Tokenizer`` as JSON text (``Tokenizer.to_str()``); it may instead sit in
                 ``"extra"``, as ``shared.checkpoint.save_checkpoint(..., extra={"tokenizer": ...})`` writes it
Other keys (optimizer, RNG states, ...) are ignored.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from gem.config import ModelConfig
from gem.model import GemLM
from shared.config import config_from_dict
from shared.errors import ConfigError, DataError, run_cli


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,): argmax when temperature == 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = (logits.float() / temperature).softmax(-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
        # Drop a token when the mass before it already reaches p (the first token is always kept).
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: GemLM,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    use_cache: bool = True,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """prompt (B, T) -> (B, T + n) with n <= max_new_tokens new tokens (fewer if every row hit EOS).

    ``temperature`` 0 is greedy decoding; ``seed`` seeds the sampling generator (same seed, same tokens,
    with or without the cache). A row that produced ``eos_token_id`` keeps emitting it. The model runs in
    eval mode (no dropout) and is put back in its previous mode afterwards.
    """
    if temperature < 0 or not 0.0 < top_p <= 1.0 or max_new_tokens < 0:
        raise ConfigError(
            f"generate: need temperature >= 0, top_p in (0, 1], max_new_tokens >= 0; got "
            f"temperature={temperature}, top_p={top_p}, max_new_tokens={max_new_tokens}"
        )
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise DataError(
            f"generate: the prompt must be (batch, length >= 1) token ids; got shape {tuple(prompt.shape)}"
        )
    if prompt.shape[1] + max_new_tokens > model.cfg.context_length:
        raise ConfigError(
            f"prompt of {prompt.shape[1]} tokens + max_new_tokens={max_new_tokens} exceeds "
            f"model.context_length={model.cfg.context_length}; lower max_new_tokens or shorten the prompt"
        )
    generator = None
    if seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        seq = prompt
        done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        past = None
        step_input = prompt
        for _ in range(max_new_tokens):
            if use_cache:
                out = model(step_input, past_kv=past, use_cache=True, last_only=True)
                past = out.past_kv
            else:
                out = model(seq, last_only=True)
            nxt = sample_next(out.logits[:, -1], temperature, top_p, generator)  # (B,)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            step_input = nxt[:, None]
            if eos_token_id is not None and bool(done.all()):
                break
        return seq
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_payload(model: GemLM, config: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any]:
    """The three entries ``load_inference_checkpoint`` needs, in the documented layout."""
    return {"model": model.state_dict(), "config": config, "tokenizer": tokenizer.to_str()}


def load_inference_checkpoint(path: str | Path) -> tuple[GemLM, Tokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, top-level config dict) from a checkpoint in the documented layout."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found; pass the best.pt / last.pt of a gem.train run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"checkpoint {path} cannot be read with torch.load(weights_only=True) ({type(exc).__name__}); "
            "it must hold only tensors, numbers, strings, lists and dicts"
        ) from exc
    if isinstance(state, dict) and "tokenizer" not in state and isinstance(state.get("extra"), dict):
        state["tokenizer"] = state["extra"].get("tokenizer")  # shared.checkpoint's extra={"tokenizer": ...}
    missing = [
        key
        for key in ("model", "config", "tokenizer")
        if not isinstance(state, dict) or state.get(key) is None
    ]
    if missing:
        raise DataError(f"checkpoint {path} lacks {missing}; expected keys 'model', 'config', 'tokenizer'")
    config = state["config"]
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise DataError(f"checkpoint {path}: 'config' must be a dict with a 'model' section")
    try:
        cfg = config_from_dict(ModelConfig, config["model"])
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {path}: {exc}") from None
    try:
        tokenizer = Tokenizer.from_str(state["tokenizer"])
    except Exception as exc:
        raise DataError(f"checkpoint {path}: 'tokenizer' is not tokenizers JSON ({exc})") from exc
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise DataError(
            f"checkpoint {path}: the tokenizer has {tokenizer.get_vocab_size()} tokens but "
            f"model.vocab_size={cfg.vocab_size}"
        )
    model = GemLM(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"checkpoint {path}: weights do not match its model config ({first})") from exc
    return model.eval(), tokenizer, config


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gem.generate", description="Continue a prompt with a GEM LM.")
    p.add_argument("--checkpoint", required=True, help="best.pt / last.pt written by gem.train")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument(
        "--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default 0.8)"
    )
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus mass p in (0, 1] (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--stop-token",
        default="<eos>",
        help="stop at this token if the tokenizer has it (default <eos>, the suite tokenizer's end token)",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence at each step")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_inference_checkpoint(args.checkpoint)
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise DataError("--prompt encodes to no tokens; give some text")
    if len(ids) + args.max_new_tokens > model.cfg.context_length:
        raise ConfigError(
            f"--prompt is {len(ids)} tokens and --max-new-tokens={args.max_new_tokens}: together more than "
            f"the model's context_length={model.cfg.context_length}; lower --max-new-tokens"
        )
    out = generate(
        model,
        torch.tensor([ids]),
        args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        use_cache=not args.no_cache,
        eos_token_id=tokenizer.token_to_id(args.stop_token),
    )
    text = tokenizer.decode(out[0, len(ids) :].tolist())
    print(args.prompt + text)
    return text


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
