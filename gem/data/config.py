"""The ``data`` section of a GEM config: where the suite lives and how it is built, tokenized and batched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigError

QUICK_MAX_EXAMPLES_PER_TASK = 600
QUICK_MAX_LM_CHARS_PER_DOMAIN = 200_000


@dataclass
class DataConfig:
    """Where the GEM suite lives and how it is built, split, tokenized and batched.

    Attributes:
        root: data root holding raw/ (files fetched from the pinned packages) and the built suite folders
        quick: use the smaller quick suite in <root>/suite-quick (caps of 600 examples per task, 200k LM characters per domain)
        seed: seed of every split, subsample, shuffle and batch order
        val_fraction: share of each task's and domain's documents in the validation split
        test_fraction: share of each task's and domain's documents in the test split
        max_examples_per_task: most examples of one classification task over all splits (0 = no cap)
        max_lm_chars_per_domain: most characters of LM text of one domain over all splits (0 = no cap)
        min_examples_per_label: labels with fewer examples are dropped from a classification task
        held_out_domain: domain kept out of the generalist's training mix and the tokenizer's text ("" = none)
        adaptation_examples: training examples kept for the held-out domain's task (its adaptation budget)
        vocab_size: size of the byte-level BPE vocabulary, special tokens included
        min_frequency: fewest occurrences of a pair for a BPE merge
        domain_tags: add one <domain> special token per domain to the vocabulary
        context_len: tokens per LM training block
        max_len: longest classification or multiple-choice sequence in tokens (longer ones are truncated)
        max_unk_fraction: a task whose text encodes to more <unk> tokens than this share is refused
        extra_tasks: user tasks added to the suite: JSONL benchmark exports or lm-eval style task YAMLs
        cache_dir: download cache of the package distributions
    """

    root: str = "data/gem"
    quick: bool = False
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_examples_per_task: int = 3000
    max_lm_chars_per_domain: int = 0
    min_examples_per_label: int = 10
    held_out_domain: str = "domain_adaptive"
    adaptation_examples: int = 64
    vocab_size: int = 4096
    min_frequency: int = 2
    domain_tags: bool = True
    context_len: int = 128
    max_len: int = 128
    max_unk_fraction: float = 0.5
    extra_tasks: list[str] = field(default_factory=list)
    cache_dir: str = "data/.cache/downloads"

    def __post_init__(self) -> None:
        if not (
            0 <= self.val_fraction < 1
            and 0 <= self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} and data.test_fraction={self.test_fraction} must be in "
                "[0, 1) and sum to less than 1"
            )
        for name in (
            "max_examples_per_task",
            "max_lm_chars_per_domain",
            "adaptation_examples",
            "min_examples_per_label",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name}={getattr(self, name)} must be >= 0")
        if self.vocab_size < 300:
            raise ConfigError(
                f"data.vocab_size={self.vocab_size} must be >= 300 (256 byte tokens + specials)"
            )
        if self.context_len < 2 or self.max_len < 4:
            raise ConfigError("data.context_len must be >= 2 and data.max_len >= 4")
        if not 0 < self.max_unk_fraction <= 1:
            raise ConfigError(f"data.max_unk_fraction={self.max_unk_fraction} must be in (0, 1]")

    @property
    def suite_dir(self) -> Path:
        return Path(self.root) / ("suite-quick" if self.quick else "suite")

    @property
    def raw_dir(self) -> Path:
        return Path(self.root) / "raw"

    def resolved(self) -> DataConfig:
        """This config with the quick caps applied when ``quick`` (the caps the suite is built with)."""
        if not self.quick:
            return self

        def cap(value: int, quick_cap: int) -> int:
            return quick_cap if value == 0 else min(value, quick_cap)

        return dataclasses.replace(
            self,
            max_examples_per_task=cap(self.max_examples_per_task, QUICK_MAX_EXAMPLES_PER_TASK),
            max_lm_chars_per_domain=cap(self.max_lm_chars_per_domain, QUICK_MAX_LM_CHARS_PER_DOMAIN),
        )
