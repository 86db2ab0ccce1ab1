"""Real-benchmark adapters: JSONL exports and lm-evaluation-harness style task YAMLs -> ``TaskData``.

GEM (arXiv 2503.22698) reports per-domain benchmarks that the embedded suite cannot ship (the authors' code
trains on PubMedQA and Banking77). A user exports such a benchmark to ``data/gem/<task>.jsonl`` or writes a
task YAML in the lm-evaluation-harness format (EleutherAI, ``docs/task_guide.md``) and adds it with
``data.extra_tasks``. The schemas and the supported YAML subset are documented in ``data/gem/README.md``:

- JSONL, one object per line: classification ``{"text": str, "label": str | int}``; multiple choice
  ``{"question" | "text": str, "choices": [str, ...], "label": int}``; optional ``"split"`` (train /
  validation / val / test), ``"domain"``, ``"doc_id"`` (split group), ``"lang"``. Without ``split`` fields the
  rows are split by the config's seed and fractions. An optional ``<stem>.labels.txt`` beside the file fixes
  the label set and order (one label per line).
- lm-eval YAML: ``task``, ``dataset_path`` (a local .jsonl/.json file or a folder of ``<split>.jsonl``, or
  ``json`` with ``dataset_kwargs.data_files``), ``training_split`` / ``validation_split`` / ``test_split``,
  ``doc_to_text`` / ``doc_to_target`` / ``doc_to_choice`` (a field name, a literal, or ``{{ expr }}``
  templates over the document's fields), ``output_type`` (``multiple_choice`` or ``loglikelihood_rolling``),
  ``metric_list``, ``description``, ``target_delimiter``, ``include``. ``!function``, ``process_docs``,
  ``generate_until``, few-shot prompting and Hub dataset ids are refused with a one-line ``DataError``.

Every bad row (invalid UTF-8 or JSON, a missing field, empty text, a label outside the label set) is a
``DataError`` naming the file and the line.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from shared.errors import DataError

TaskKind = Literal["classification", "multiple_choice", "lm"]
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "val",
    "val": "val",
    "dev": "val",
    "test": "test",
}


@dataclass(frozen=True)
class Example:
    """One example of a task.

    Attributes:
        text: classification input, multiple-choice prompt, or LM text
        label: class index (classification), gold choice index (multiple choice), -1 for LM text
        choices: multiple-choice continuations scored after ``text`` (target delimiter included)
        doc_id: the split group of the example (examples of one document share a split)
        lang: language code of the text ("" when unknown)
    """

    text: str
    label: int = -1
    choices: tuple[str, ...] = ()
    doc_id: str = ""
    lang: str = ""


@dataclass
class TaskData:
    """A task with its examples per split.

    Attributes:
        name: task name (unique in a suite)
        domain: the GEM domain it belongs to ("" when the source does not say)
        kind: classification (macro F1), multiple_choice (accuracy of the best-scored choice) or lm (perplexity)
        labels: class names in index order (classification); empty otherwise
        splits: split name (train / val / test) -> examples
        metrics: metric names requested by the source (e.g. acc, f1)
        path: the file the task was read from
    """

    name: str
    domain: str
    kind: TaskKind
    labels: list[str]
    splits: dict[str, list[Example]]
    metrics: list[str] = field(default_factory=list)
    path: str = ""

    def split(self, name: str) -> list[Example]:
        return self.splits.get(name, [])

    def counts(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}

    def label_counts(self, split: str) -> dict[str, int]:
        if self.kind != "classification":
            return {}
        counts = np.bincount([e.label for e in self.split(split)], minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}


# --- JSONL -------------------------------------------------------------------------------------------------
def read_jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line; bad UTF-8 / JSON / non-objects -> DataError."""
    if not path.is_file():
        raise DataError(f"missing file {path}: export the benchmark as JSONL there (see data/gem/README.md)")
    rows = []
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: line {n}: invalid UTF-8 at byte {exc.start + 1} ({exc.reason}); re-export the file as UTF-8"
            ) from exc
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {n}: invalid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
            ) from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
        rows.append((n, obj))
    if not rows:
        raise DataError(f"{path}: no rows; write one JSON object per line")
    return rows


def _text_field(path: Path, n: int, row: dict[str, Any], keys: Sequence[str]) -> str:
    for key in keys:
        if key in row:
            value = row[key]
            if not isinstance(value, str):
                raise DataError(f"{path}: line {n}: '{key}' must be a string, got {type(value).__name__}")
            if not value.strip():
                raise DataError(f"{path}: line {n}: empty '{key}'; drop the row or fill in its text")
            return value
    raise DataError(
        f"{path}: line {n}: missing field '{keys[0]}'" + (f" (or '{keys[1]}')" if len(keys) > 1 else "")
    )


def _read_label_file(path: Path) -> list[str] | None:
    side = path.with_name(path.name.split(".")[0] + ".labels.txt")
    if not side.is_file():
        return None
    labels = [line.strip() for line in side.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise DataError(f"{side}: needs at least two distinct labels, one per line")
    return labels


def _class_index(path: Path, n: int, value: Any, labels: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataError(f"{path}: line {n}: 'label' must be a string or an integer, got {value!r}")
    if isinstance(value, int):
        if not 0 <= value < len(labels):
            raise DataError(
                f"{path}: line {n}: label {value} outside the label set 0..{len(labels) - 1} ({', '.join(labels)})"
            )
        return value
    if value not in labels:
        shown = ", ".join(labels[:12]) + (" ..." if len(labels) > 12 else "")
        raise DataError(f"{path}: line {n}: label {value!r} outside the label set ({shown})")
    return labels.index(value)


def assign_splits(
    groups: Sequence[str], strata: Sequence[str], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, str]:
    """group -> split, stratified by each group's label and balanced by item counts, deterministic in seed.

    Groups are shuffled within each stratum, then each goes to the split furthest below its share of the
    items assigned so far (ties: train, val, test), so a label with five or more groups reaches every split.
    """
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    size: dict[str, int] = {}
    stratum_of: dict[str, dict[str, int]] = {}
    for g, s in zip(groups, strata):
        size[g] = size.get(g, 0) + 1
        stratum_of.setdefault(g, {})
        stratum_of[g][s] = stratum_of[g].get(s, 0) + 1
    by_stratum: dict[str, list[str]] = {}
    for g, votes in stratum_of.items():
        majority = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        by_stratum.setdefault(majority, []).append(g)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        gs = sorted(by_stratum[stratum])
        counts = dict.fromkeys(fractions, 0)
        total = 0
        for i in rng.permutation(len(gs)):
            g = gs[i]
            total += size[g]
            split = max(fractions, key=lambda s: fractions[s] * total - counts[s])
            counts[split] += size[g]
            out[g] = split
    return out


def _split_rows(
    path: Path,
    rows: list[tuple[int, dict[str, Any], Example]],
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> dict[str, list[Example]]:
    has_split = [("split" in row) for _, row, _ in rows]
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    if any(has_split):
        for (n, row, ex), has in zip(rows, has_split):
            value = row.get("split")
            if not has or value not in _SPLIT_ALIASES:
                raise DataError(
                    f"{path}: line {n}: 'split' must be one of train, validation, val, test on every row "
                    f"(got {value!r}); or drop it from all rows to split by seed"
                )
            splits[_SPLIT_ALIASES[value]].append(ex)
        return splits
    examples = [ex for _, _, ex in rows]
    strata = [str(ex.label) for ex in examples]
    mapping = assign_splits([ex.doc_id for ex in examples], strata, seed, val_fraction, test_fraction)
    for ex in examples:
        splits[mapping[ex.doc_id]].append(ex)
    return splits


def read_jsonl_task(
    path: str | Path,
    name: str | None = None,
    domain: str = "",
    labels: Sequence[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> TaskData:
    """A classification or multiple-choice task from a JSONL export (schema in the module docstring).

    ``labels`` (or ``<stem>.labels.txt``) fixes the label set; otherwise it is the sorted set of string
    labels, or ``0..max`` for integer labels.
    """
    path = Path(path)
    rows = read_jsonl_rows(path)
    name = name or path.name.split(".")[0]
    first_n, first = rows[0]
    kind: TaskKind = "multiple_choice" if "choices" in first else "classification"
    label_set = list(labels) if labels is not None else _read_label_file(path)
    if kind == "classification" and label_set is None:
        values = [row.get("label") for _, row in rows]
        if all(isinstance(v, str) for v in values):
            label_set = sorted(set(values))
        elif all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            label_set = [str(i) for i in range(max(values) + 1)]
        else:
            n, v = next(
                (n, row.get("label"))
                for n, row in rows
                if not isinstance(row.get("label"), type(values[0])) or row.get("label") is None
            )
            raise DataError(
                f"{path}: line {n}: label {v!r}: every row needs a 'label', all strings or all integers >= 0"
            )
    domains = {row.get("domain", domain) for _, row in rows}
    if len(domains) > 1:
        raise DataError(
            f"{path}: rows name several domains ({', '.join(sorted(map(str, domains)))}); one task has one domain"
        )
    parsed: list[tuple[int, dict[str, Any], Example]] = []
    for n, row in rows:
        doc_id, lang = str(row.get("doc_id", f"line{n}")), str(row.get("lang", ""))
        if kind == "multiple_choice":
            text = _text_field(path, n, row, ("question", "text"))
            choices = row.get("choices")
            if (
                not isinstance(choices, list)
                or len(choices) < 2
                or not all(isinstance(c, str) and c.strip() for c in choices)
            ):
                raise DataError(
                    f"{path}: line {n}: 'choices' must be a list of at least two non-empty strings"
                )
            label = row.get("label")
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
                raise DataError(
                    f"{path}: line {n}: label {label!r} outside the choices 0..{len(choices) - 1}"
                )
            ex = Example(text, label, tuple(" " + c for c in choices), doc_id, lang)
        else:
            text = _text_field(path, n, row, ("text",))
            if "label" not in row:
                raise DataError(f"{path}: line {n}: missing field 'label'")
            ex = Example(text, _class_index(path, n, row["label"], label_set), (), doc_id, lang)
        parsed.append((n, row, ex))
    if first_n and kind == "multiple_choice" and any("choices" not in row for _, row, _ in parsed):
        n = next(n for n, row, _ in parsed if "choices" not in row)
        raise DataError(
            f"{path}: line {n}: missing field 'choices' (line {first_n} made this a multiple-choice file)"
        )
    splits = _split_rows(path, parsed, seed, val_fraction, test_fraction)
    metrics = ["macro_f1"] if kind == "classification" else ["acc"]
    return TaskData(name, str(domains.pop() or ""), kind, list(label_set or []), splits, metrics, str(path))


# --- lm-evaluation-harness task YAMLs ----------------------------------------------------------------------
SUPPORTED_YAML_KEYS = {
    "task", "tag", "task_alias", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
    "validation_split", "test_split", "fewshot_split", "doc_to_text", "doc_to_target", "doc_to_choice",
    "output_type", "metric_list", "description", "target_delimiter", "fewshot_delimiter", "num_fewshot",
    "fewshot_config", "metadata", "include", "should_decontaminate", "doc_to_decontamination_query", "domain",
}  # fmt: skip
SUPPORTED_OUTPUT_TYPES = ("multiple_choice", "loglikelihood_rolling")
SUPPORTED_METRICS = {
    "acc", "acc_norm", "f1", "macro_f1", "mcc", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte",
}  # fmt: skip
SUPPORTED_AGGREGATIONS = {"mean", "f1", "mcc", "perplexity", "weighted_perplexity", "bits_per_byte"}
_METHODS = {"strip", "lower", "upper", "title", "capitalize", "lstrip", "rstrip"}


class _TaskYamlLoader(yaml.SafeLoader):
    """SafeLoader that stops at any ``!tag`` (``!function utils.fn`` runs Python code in the harness)."""

    path: Path = Path("?")


def _refuse_tag(loader: _TaskYamlLoader, suffix: str, node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    raise DataError(
        f"{loader.path}: line {line}: '!{suffix}' is not supported (no Python code is run from task YAMLs); "
        "write the field as a {{ field }} template or precompute it into the JSONL"
    )


_TaskYamlLoader.add_multi_constructor("!", _refuse_tag)


def _load_task_yaml(path: Path, depth: int = 0) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"missing task YAML {path}")
    loader_cls = type("_Loader", (_TaskYamlLoader,), {"path": path})
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader_cls)  # a SafeLoader subclass
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason}); save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise DataError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: the top level must be a mapping of task keys")
    if "include" in doc:
        if depth >= 5:
            raise DataError(f"{path}: 'include' nests more than five levels deep")
        base = _load_task_yaml(path.parent / str(doc["include"]), depth + 1)
        doc = {**base, **{k: v for k, v in doc.items() if k != "include"}}
    return doc


class _Expr:
    """``{{ expr }}`` of a doc_to_* template, evaluated on one document by a whitelist over Python's ``ast``.

    Supported (the subset the harness's own YAMLs mostly use): field names, ``x.y``, ``x[0]``, ``x['k']``,
    string/number literals, ``[a, b]`` lists, ``a + b`` and the no-argument string methods strip, lower,
    upper, title, capitalize, lstrip, rstrip. Jinja filters (``|``) and statements (``{% %}``) are refused.
    Written by hand instead of depending on Jinja2 so unsupported constructs fail loudly instead of
    rendering differently from the harness.
    """

    def __init__(self, source: str, where: str):
        self.source, self.where = source.strip(), where
        if "|" in self.source.replace("||", ""):
            raise DataError(
                f"{where}: Jinja filter in '{{{{ {self.source} }}}}' is not supported; use a field or method"
            )
        try:
            self.tree = ast.parse(self.source, mode="eval").body
        except SyntaxError as exc:
            raise DataError(
                f"{where}: '{{{{ {self.source} }}}}' is not a supported expression ({exc.msg})"
            ) from exc
        self._check(self.tree)

    def _check(self, node: ast.AST) -> None:
        ok = (
            ast.Name,
            ast.Constant,
            ast.List,
            ast.Tuple,
            ast.Subscript,
            ast.Attribute,
            ast.Call,
            ast.BinOp,
            ast.Load,
            ast.Add,
        )
        for sub in ast.walk(node):
            if not isinstance(sub, ok):
                raise DataError(
                    f"{self.where}: '{{{{ {self.source} }}}}' uses {type(sub).__name__}, which is not supported"
                )
            if isinstance(sub, ast.BinOp) and not isinstance(sub.op, ast.Add):
                raise DataError(f"{self.where}: only + is supported in '{{{{ {self.source} }}}}'")
            if isinstance(sub, ast.Call) and not (
                isinstance(sub.func, ast.Attribute)
                and sub.func.attr in _METHODS
                and not sub.args
                and not sub.keywords
            ):
                raise DataError(
                    f"{self.where}: only {', '.join(sorted(_METHODS))}() calls are supported in '{{{{ {self.source} }}}}'"
                )

    def __call__(self, doc: dict[str, Any], line: str) -> Any:
        return self._eval(self.tree, doc, line)

    def _eval(self, node: ast.AST, doc: dict[str, Any], line: str) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in doc:
                raise DataError(
                    f"{line}: missing field '{node.id}' (used by {self.where}: '{{{{ {self.source} }}}}')"
                )
            return doc[node.id]
        if isinstance(node, ast.List | ast.Tuple):
            return [self._eval(e, doc, line) for e in node.elts]
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, doc, line), self._eval(node.right, doc, line)
            try:
                return left + right
            except TypeError as exc:
                raise DataError(
                    f"{line}: cannot add {type(left).__name__} and {type(right).__name__} in {self.where}"
                ) from exc
        if isinstance(node, ast.Subscript):
            value, key = self._eval(node.value, doc, line), self._eval(node.slice, doc, line)
            try:
                return value[key]
            except (KeyError, IndexError, TypeError) as exc:
                raise DataError(
                    f"{line}: '{{{{ {self.source} }}}}' of {self.where}: no item {key!r} ({exc})"
                ) from exc
        if isinstance(node, ast.Call):
            target = self._eval(node.func.value, doc, line)
            if not isinstance(target, str):
                raise DataError(
                    f"{line}: {node.func.attr}() of {self.where} needs a string, got {type(target).__name__}"
                )
            return getattr(target, node.func.attr)()
        if isinstance(node, ast.Attribute):  # Jinja's x.y reads a mapping key
            value = self._eval(node.value, doc, line)
            if isinstance(value, dict) and node.attr in value:
                return value[node.attr]
            raise DataError(f"{line}: '{{{{ {self.source} }}}}' of {self.where}: no field '{node.attr}'")
        raise AssertionError(node)  # unreachable: _check admitted only the node types above


_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.S)


class _DocField:
    """One doc_to_* value: a ``{{ }}`` template, a field name, or a literal (the harness's three readings)."""

    def __init__(self, value: Any, key: str, path: Path):
        self.value, self.key, self.where = value, key, f"{path}: {key}"
        if isinstance(value, str) and ("{%" in value or "{#" in value):
            raise DataError(
                f"{self.where}: Jinja statements ({{% %}}) are not supported; use {{{{ field }}}} templates"
            )
        self.parts = (
            [_Expr(m, self.where) for m in _TEMPLATE.findall(value)] if isinstance(value, str) else []
        )
        self.whole = isinstance(value, str) and _TEMPLATE.fullmatch(value.strip()) is not None
        self.items = [_DocField(x, key, path) for x in value] if isinstance(value, list) else []

    def __call__(self, doc: dict[str, Any], line: str) -> Any:
        v = self.value
        if isinstance(v, list):  # a list of literals and/or templates, e.g. ["{{sol1}}", "{{sol2}}"]
            return [item(doc, line) if item.parts else item.value for item in self.items]
        if not isinstance(v, str):
            return v
        if self.whole:
            return self.parts[0](doc, line)  # keep lists and ints as they are
        if self.parts:
            pieces = iter(self.parts)
            return _TEMPLATE.sub(lambda m: str(next(pieces)(doc, line)), v)
        return doc[v] if v in doc else v


def _yaml_rows(path: Path, where: str) -> list[tuple[str, dict[str, Any]]]:
    """(location for messages, document) of a .jsonl or .json (a list of objects) file."""
    if path.suffix == ".jsonl":
        return [(f"{path}: line {n}", row) for n, row in read_jsonl_rows(path)]
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: invalid UTF-8 at byte {exc.start + 1}; re-export the file as UTF-8"
            ) from exc
        except json.JSONDecodeError as exc:
            if exc.lineno > 1 or "Extra data" in exc.msg:  # JSON Lines saved with a .json name
                return [(f"{path}: line {n}", row) for n, row in read_jsonl_rows(path)]
            raise DataError(
                f"{path}: line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from exc
        if isinstance(data, dict):
            return [(f"{path}: line 1", data)]
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise DataError(f"{path}: expected a JSON list of objects (or JSON Lines)")
        return [(f"{path}: item {i}", d) for i, d in enumerate(data)]
    raise DataError(f"{where}: {path} must be a .jsonl or .json file")


def _data_files(doc: dict[str, Any], path: Path) -> dict[str, Path | None]:
    """Harness split name -> local file. ``None`` = the one file holding every split (split by field or seed)."""
    where = f"{path}: dataset_path"
    ds = doc.get("dataset_path")
    if not isinstance(ds, str) or not ds:
        raise DataError(
            f"{where} is missing; point it at a local .jsonl/.json file or a folder of <split>.jsonl"
        )
    if ds == "json":
        files = (
            ((doc.get("dataset_kwargs") or {}).get("data_files"))
            if isinstance(doc.get("dataset_kwargs"), dict)
            else None
        )
        if isinstance(files, str):
            return {"__all__": path.parent / files}
        if not isinstance(files, dict) or not files:
            raise DataError(
                f"{path}: dataset_path 'json' needs dataset_kwargs.data_files (a file or split: file mapping)"
            )
        out = {}
        for split, f in files.items():
            if isinstance(f, list):
                if len(f) != 1:
                    raise DataError(f"{path}: dataset_kwargs.data_files.{split} must be one file")
                f = f[0]
            out[str(split)] = path.parent / str(f)
        return out
    local = path.parent / ds
    if local.is_file():
        return {"__all__": local}
    if local.is_dir():
        return {"__dir__": local}
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ds) or "/" not in ds:
        raise DataError(
            f"{where} '{ds}' is not a local file; Hugging Face Hub datasets cannot be downloaded here: export it "
            f"to JSONL (see data/gem/README.md) and point dataset_path at the file"
        )
    raise DataError(f"{where} '{ds}': no such file or folder (relative to {path.parent})")


def read_lm_eval_yaml(
    path: str | Path, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> TaskData:
    """A task from an lm-evaluation-harness style YAML over local JSON/JSONL data (subset in the module doc).

    ``multiple_choice`` with one fixed ``doc_to_choice`` list is a classification task whose labels are that
    list (macro F1; the examples keep the choices for likelihood scoring); with per-document choices it is a
    multiple-choice task. ``loglikelihood_rolling`` gives LM text (doc_to_target, else doc_to_text).
    """
    path = Path(path)
    doc = _load_task_yaml(path)
    if "group" in doc:
        raise DataError(f"{path}: group YAMLs are not supported; list each task YAML in data.extra_tasks")
    unknown = sorted(set(doc) - SUPPORTED_YAML_KEYS)
    if unknown:
        raise DataError(
            f"{path}: key '{unknown[0]}' is not supported by the GEM adapter; supported: {', '.join(sorted(SUPPORTED_YAML_KEYS))}"
        )
    name = doc.get("task")
    if not isinstance(name, str) or not name:
        raise DataError(f"{path}: 'task' (the task name) is missing")
    output_type = doc.get("output_type", "multiple_choice")
    if output_type not in SUPPORTED_OUTPUT_TYPES:
        raise DataError(
            f"{path}: output_type '{output_type}' is not supported; use one of {', '.join(SUPPORTED_OUTPUT_TYPES)} "
            "(generation and single-continuation loglikelihood tasks are not part of the GEM evaluation)"
        )
    if int(doc.get("num_fewshot") or 0) != 0:
        raise DataError(f"{path}: num_fewshot {doc['num_fewshot']} is not supported; set num_fewshot: 0")
    metrics = []
    for i, m in enumerate(doc.get("metric_list") or []):
        metric = m.get("metric") if isinstance(m, dict) else None
        if metric not in SUPPORTED_METRICS:
            raise DataError(
                f"{path}: metric_list[{i}] metric {metric!r} is not supported; use one of {', '.join(sorted(SUPPORTED_METRICS))}"
            )
        agg = m.get("aggregation", "mean")
        if agg not in SUPPORTED_AGGREGATIONS:
            raise DataError(
                f"{path}: metric_list[{i}] aggregation {agg!r} is not supported; use one of {', '.join(sorted(SUPPORTED_AGGREGATIONS))}"
            )
        metrics.append(metric)
    split_names = {
        "train": doc.get("training_split"),
        "val": doc.get("validation_split"),
        "test": doc.get("test_split"),
    }
    if not any(split_names.values()):
        raise DataError(f"{path}: none of training_split, validation_split, test_split is set")
    description = str(doc.get("description") or "")
    delim = str(doc.get("target_delimiter", " "))
    to_text = _DocField(doc.get("doc_to_text", "text"), "doc_to_text", path)
    if output_type == "multiple_choice" and "doc_to_target" not in doc:
        raise DataError(
            f"{path}: doc_to_target is missing (the gold choice: an index, a choice, or a template)"
        )
    to_target = _DocField(doc.get("doc_to_target"), "doc_to_target", path)
    raw_choice = doc.get("doc_to_choice")
    fixed = isinstance(raw_choice, list) and all(isinstance(c, str) and "{{" not in c for c in raw_choice)
    to_choice = _DocField(raw_choice, "doc_to_choice", path) if raw_choice is not None else None
    if output_type == "multiple_choice" and to_choice is None:
        raise DataError(
            f"{path}: output_type multiple_choice needs doc_to_choice (a list, a field or a template)"
        )
    kind: TaskKind = (
        "lm" if output_type == "loglikelihood_rolling" else ("classification" if fixed else "multiple_choice")
    )
    labels = [str(c) for c in raw_choice] if fixed else []

    files = _data_files(doc, path)
    rows_by_split: dict[str, list[tuple[str, dict[str, Any]]]] = {s: [] for s in SPLITS}
    unsplit: list[tuple[str, dict[str, Any]]] = []
    for ours, theirs in split_names.items():
        if not theirs:
            continue
        if "__dir__" in files:
            folder = files["__dir__"]
            cands = [folder / f"{theirs}.jsonl", folder / f"{theirs}.json"]
            f = next((c for c in cands if c.is_file()), None)
            if f is None:
                raise DataError(f"{path}: {ours} split '{theirs}': no {cands[0]} or {cands[1]}")
            rows_by_split[ours] = _yaml_rows(f, f"{path}: dataset_path")
        elif theirs in files:
            rows_by_split[ours] = _yaml_rows(files[theirs], f"{path}: data_files.{theirs}")
        elif "__all__" not in files:
            raise DataError(
                f"{path}: {ours} split '{theirs}' is not in dataset_kwargs.data_files ({', '.join(files)})"
            )
    if "__all__" in files:
        all_rows = _yaml_rows(files["__all__"], f"{path}: dataset_path")
        if any("split" in d for _, d in all_rows):
            wanted = {v: k for k, v in split_names.items() if v}
            for where, d in all_rows:
                if d.get("split") not in wanted:
                    raise DataError(
                        f"{where}: 'split' {d.get('split')!r} is not one of the YAML's splits ({', '.join(wanted)})"
                    )
                rows_by_split[wanted[d["split"]]].append((where, d))
        else:
            unsplit = all_rows

    def to_example(where: str, d: dict[str, Any], index: int) -> Example:
        if kind == "lm":
            text = (to_target if "doc_to_target" in doc else to_text)(d, where)
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: empty text for loglikelihood_rolling")
            return Example(text, -1, (), str(d.get("doc_id", where)), str(d.get("lang", "")))
        text = to_text(d, where)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: doc_to_text gives empty or non-text {text!r}")
        choices = labels if fixed else to_choice(d, where)
        if isinstance(choices, str):  # a template that rendered a Python list literal, as the harness accepts
            try:
                choices = ast.literal_eval(choices)
            except (ValueError, SyntaxError):
                choices = None
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError(
                f"{where}: doc_to_choice must give a list of at least two choices, got {choices!r}"
            )
        target = to_target(d, where)
        if (
            isinstance(target, str)
            and target.strip().lstrip("-").isdigit()
            and target.strip() not in map(str, choices)
        ):
            target = int(target)
        if isinstance(target, bool) or not isinstance(target, int | str):
            raise DataError(f"{where}: doc_to_target gives {target!r}; it must be a choice index or a choice")
        if isinstance(target, str):
            if target not in [str(c) for c in choices]:
                raise DataError(
                    f"{where}: label {target!r} outside the choices ({', '.join(map(str, choices))})"
                )
            target = [str(c) for c in choices].index(target)
        if not 0 <= target < len(choices):
            raise DataError(f"{where}: label {target} outside the choices 0..{len(choices) - 1}")
        cont = tuple(delim + str(c) for c in choices)
        return Example(
            description + text, target, cont, str(d.get("doc_id", f"doc{index}")), str(d.get("lang", ""))
        )

    splits = {s: [to_example(w, d, i) for i, (w, d) in enumerate(rows)] for s, rows in rows_by_split.items()}
    if unsplit:
        examples = [to_example(w, d, i) for i, (w, d) in enumerate(unsplit)]
        mapping = assign_splits(
            [e.doc_id for e in examples], [str(e.label) for e in examples], seed, val_fraction, test_fraction
        )
        for e in examples:
            splits[mapping[e.doc_id]].append(e)
    if not metrics:
        metrics = ["perplexity"] if kind == "lm" else (["macro_f1"] if kind == "classification" else ["acc"])
    return TaskData(name, str(doc.get("domain") or ""), kind, labels, splits, metrics, str(path))


def read_task_file(
    path: str | Path, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> TaskData:
    """A user task from ``data.extra_tasks``: ``.yaml``/``.yml`` (lm-eval style) or ``.jsonl``."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        return read_lm_eval_yaml(path, seed, val_fraction, test_fraction)
    if path.suffix == ".jsonl":
        return read_jsonl_task(path, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    raise DataError(f"{path}: a task file must be .jsonl (benchmark export) or .yaml (lm-eval style task)")
