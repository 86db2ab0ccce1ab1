"""GEM data: the embedded eight-domain suite, real-benchmark adapters, the BPE tokenizer and torch datasets.

GEM (arXiv 2503.22698) names eight domains in its abstract (healthcare, law, finance, STEM, commonsense,
conversational, multilingual, domain-adaptive) but no benchmark list; this package builds them from real
labelled text inside pinned registry packages (``data/gem/README.md`` has the construction and the counts).

- ``sources.py``: the pinned packages and one reader per source file format;
- ``suite.py``: the eight-domain suite (document-level, label-stratified splits), ``suite_manifest.json``;
- ``adapters.py``: JSONL benchmark exports and lm-evaluation-harness style task YAMLs -> ``TaskData``;
- ``tokenizer.py``: byte-level BPE trained on the suite's training text (``tokenizer.json``);
- ``dataset.py``: LM blocks, classification and multiple-choice datasets with their collate functions.
"""

from gem.data.adapters import Example, TaskData, read_jsonl_task, read_lm_eval_yaml, read_task_file
from gem.data.config import DataConfig
from gem.data.dataset import (
    ClassificationDataset,
    LMBlockDataset,
    MultipleChoiceDataset,
    collate_classification,
    collate_lm,
    collate_multiple_choice,
    describe,
    format_description,
    make_loader,
)
from gem.data.suite import DOMAINS, Suite, build_suite, load_suite
from gem.data.tokenizer import GemTokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "DOMAINS",
    "ClassificationDataset",
    "DataConfig",
    "Example",
    "GemTokenizer",
    "LMBlockDataset",
    "MultipleChoiceDataset",
    "Suite",
    "TaskData",
    "build_suite",
    "collate_classification",
    "collate_lm",
    "collate_multiple_choice",
    "describe",
    "format_description",
    "load_suite",
    "load_tokenizer",
    "make_loader",
    "read_jsonl_task",
    "read_lm_eval_yaml",
    "read_task_file",
    "train_tokenizer",
]
