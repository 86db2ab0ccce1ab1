"""Byte-level BPE tokenizer for GEM's on-device LMs, trained on the suite's training text only.

The paper (arXiv 2503.22698) gives no tokenizer; the authors' code uses bert-base-uncased's WordPiece. A
byte-level BPE (GPT-2 style, Hugging Face ``tokenizers``) encodes every language of the suite losslessly, so
``decode(encode(x)) == x``. Special tokens come first: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then
one ``<domain>`` tag per domain when ``DataConfig.domain_tags``. ``<unk>`` is never produced by the byte-level
model itself; it exists for tokenizer files brought from elsewhere, which ``check_coverage`` screens: a
vocabulary that matches (almost) nothing of a task's text is refused with a ``DataError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from shared.errors import DataError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
BASE_SPECIALS = (PAD, BOS, EOS, UNK)


def domain_tag(domain: str) -> str:
    return f"<{domain}>"


class GemTokenizer:
    """A ``tokenizers.Tokenizer`` with the ids of the special tokens and encode/decode helpers."""

    def __init__(self, tokenizer: Tokenizer, path: str = ""):
        self.tk = tokenizer
        self.path = path
        ids = {t: tokenizer.token_to_id(t) for t in BASE_SPECIALS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(
                f"{path or 'tokenizer'}: special tokens {', '.join(missing)} are missing; train it with gem.data.train_tokenizer"
            )
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (ids[t] for t in BASE_SPECIALS)

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    def domain_tag_id(self, domain: str) -> int:
        i = self.tk.token_to_id(domain_tag(domain))
        if i is None:
            raise DataError(
                f"{self.path or 'tokenizer'}: no domain tag {domain_tag(domain)}; train it with domain_tags on"
            )
        return i

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.tk.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` atomically (temp file, then ``os.replace``)."""
        from shared.fetch import atomic_write_text

        atomic_write_text(self.tk.to_str(pretty=True), path)
        self.path = str(path)

    def check_coverage(
        self, texts: Sequence[str], task: str, file: str, max_unk_fraction: float = 0.5
    ) -> float:
        """Share of ``<unk>`` tokens over ``texts``; above ``max_unk_fraction`` the task is refused."""
        ids = [i for seq in self.encode_batch(texts[:2000]) for i in seq]
        if not ids:
            raise DataError(f"{file}: task {task} has no text to tokenize")
        frac = sum(i == self.unk_id for i in ids) / len(ids)
        if frac > max_unk_fraction:
            raise DataError(
                f"{file}: {frac:.0%} of the tokens of task {task} are {UNK} with tokenizer {self.path or '(in memory)'}; "
                "its vocabulary does not cover this text: retrain it (python -m gem.prepare --force) or use a byte-level BPE"
            )
        return frac


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, domains: Sequence[str] = (), min_frequency: int = 2
) -> GemTokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens (special tokens and 256 byte tokens included).

    Deterministic: the same texts in the same order give the same ``tokenizer.json``.
    """
    specials = [*BASE_SPECIALS, *(domain_tag(d) for d in domains)]
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    return GemTokenizer(tk)


def load_tokenizer(path: str | Path) -> GemTokenizer:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing tokenizer {path}: run `make data-gem` (python -m gem.prepare)")
    try:
        tk = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception for any malformed file
        msg = " ".join(str(exc).split())
        raise DataError(
            f"{path}: not a tokenizers JSON file ({msg}); run `python -m gem.prepare --force`"
        ) from exc
    return GemTokenizer(tk, str(path))
