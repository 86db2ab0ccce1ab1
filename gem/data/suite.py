"""The embedded eight-domain GEM suite: LM text and labelled tasks per domain, built from ``sources.py``.

GEM (arXiv 2503.22698, abstract) evaluates across healthcare, law, finance, STEM, commonsense,
conversational, multilingual and domain-adaptive (held-out domain transfer) tasks. Per domain the suite has
(a) LM text in train / val / test (perplexity) and (b) labelled tasks in train / val / test (macro F1), plus
MMLU multiple-choice questions as an evaluation-only test split where MMLU has the domain's subjects.

Splits are by document (an ICD-10 block, a licence family, a dialogue, a news post, an article), stratified
by label and deterministic in ``DataConfig.seed``; a document's LM text and its task examples share one
split, so no test text is ever seen in training. ``domain_adaptive`` is the held-out domain: its text is
kept out of the generalist's mix and the tokenizer, and its task keeps only ``adaptation_examples`` training
examples (the adaptation budget). The on-disk layout (``suite_manifest.json``, ``lm/<domain>/<split>.jsonl``,
``tasks/<task>/<split>.jsonl``) is documented in ``data/gem/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gem.data.sources as S
from gem.data.adapters import SPLITS, Example, TaskData, assign_splits, read_jsonl_rows, read_task_file
from gem.data.config import DataConfig
from shared.errors import DataError
from shared.fetch import atomic_write_text, sha256_file

SUITE_VERSION = 1
MANIFEST = "suite_manifest.json"
DOMAINS = (
    "healthcare", "law", "finance", "stem", "commonsense", "conversational", "multilingual", "domain_adaptive",
)  # fmt: skip

# MMLU subjects (lm-eval names) per domain; every other subject is general knowledge -> commonsense.
MMLU_DOMAINS = {
    "healthcare": (
        "anatomy", "clinical_knowledge", "college_medicine", "medical_genetics", "professional_medicine",
        "nutrition", "virology", "human_aging",
    ),
    "law": ("international_law", "jurisprudence", "professional_law"),
    "finance": ("professional_accounting", "econometrics", "high_school_macroeconomics", "high_school_microeconomics"),
    "stem": (
        "abstract_algebra", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
        "college_mathematics", "college_physics", "computer_security", "conceptual_physics",
        "electrical_engineering", "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning",
    ),
}  # fmt: skip


def mmlu_domain(subject: str) -> str:
    return next((d for d, subjects in MMLU_DOMAINS.items() if subject in subjects), "commonsense")


@dataclass(frozen=True)
class TaskSpec:
    """A classification task of the embedded suite.

    Attributes:
        name: task name (folder under tasks/)
        domain: the domain it belongs to
        description: what the text and the label are
    """

    name: str
    domain: str
    description: str


TASKS = (
    TaskSpec("icd10_chapter", "healthcare", "ICD-10 category/subcategory title -> its chapter (22 classes)"),
    TaskSpec("licence_osi", "law", "paragraph of an SPDX licence text -> OSI-approved or not"),
    TaskSpec("finance_word_sentiment", "finance", "word -> Loughran-McDonald category (5 lists, or none)"),
    TaskSpec("newsgroup_topic", "stem", "20 Newsgroups post body -> sci.space or alt.atheism"),
    TaskSpec("analogy_relation", "commonsense", "word2vec analogy question 'a b c d' -> its relation"),
    TaskSpec("dialogue_topic", "conversational", "English chatterbot dialogue -> its topic"),
    TaskSpec("language_id", "multilingual", "spaCy example sentence or chatterbot dialogue -> its language"),
    TaskSpec(
        "review_sentiment", "domain_adaptive", "movie-review sentence (Pang-Lee) -> positive or negative"
    ),
)


@dataclass
class DomainSources:
    """What one domain is made of, read from the raw files.

    Attributes:
        lm: records whose texts (joined per group) are the domain's LM documents
        task: records of the domain's classification task (empty label = none)
        lm_follows_task: the LM documents are the task's documents and take the task's split
    """

    lm: list[S.Record]
    task: list[S.Record]
    lm_follows_task: bool


def read_domains(raw: Path) -> tuple[dict[str, DomainSources], list[S.MCRecord]]:
    """Every domain's records and the MMLU questions, from ``raw/<source>/`` (what ``fetch_sources`` wrote)."""
    icd = S.read_icd10(raw / "icd10" / "icd_10_v2019.xml")
    chat = S.read_chatterbot(raw / "chatterbot")
    g = raw / "gensim"
    news = S.read_newsgroups(g / "mini_newsgroup")
    spacy = S.read_spacy(raw / "spacy")
    money = [r for r in chat if r.label == "money"]
    english = [r for r in chat if r.lang == "en" and r.label != "money"]
    other = [r for r in chat if r.lang != "en" and r.label != "money"]
    langs = [S.Record(r.text, r.source, r.group, r.lang, r.lang) for r in other + spacy]
    law = S.read_spdx(raw / "spdx")
    reviews = S.read_pang_lee(g / "pang_lee_polarity.cor")
    wiki = S.read_wiki_dump(g / S.SOURCES["gensim"].patterns[0].rsplit("/", 1)[1])
    domains = {
        "healthcare": DomainSources(icd, icd, True),
        "law": DomainSources(law, law, True),
        "finance": DomainSources(money, S.read_loughran_mcdonald(raw / "lm_lexicon" / "LM.csv"), False),
        "stem": DomainSources([r for r in news if r.label == "sci.space"], news, True),
        "commonsense": DomainSources(
            wiki + S.read_lee_background(g / "lee_background.cor"),
            S.read_questions_words(g / "questions-words.txt"),
            False,
        ),
        "conversational": DomainSources(english, english, True),
        "multilingual": DomainSources(langs, langs, True),
        "domain_adaptive": DomainSources(reviews, reviews, True),
    }
    return domains, S.read_mmlu(raw / "lm_eval")


def _seed(cfg_seed: int, name: str) -> int:
    return (cfg_seed * 1_000_003 + zlib.crc32(name.encode())) % (2**32)


def _cap(items: list[Any], n: int, rng: np.random.Generator) -> list[Any]:
    """A seeded random subset of ``n`` items in their original order (all of them when n >= len)."""
    if n <= 0 or len(items) <= n:
        return items
    keep = np.sort(rng.choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def _balance_none(records: list[S.Record], rng: np.random.Generator) -> list[S.Record]:
    """The finance lexicon's ``none`` class (words in no list) cut to the size of its largest real class."""
    counts = Counter(r.label for r in records if r.label != "none")
    if not counts or "none" not in {r.label for r in records}:
        return records
    none = [r for r in records if r.label == "none"]
    keep = {id(r) for r in _cap(none, max(counts.values()), rng)}
    return [r for r in records if r.label != "none" or id(r) in keep]


def _lm_docs(records: list[S.Record]) -> list[dict[str, str]]:
    """One LM document per group: the group's texts in file order, one per line."""
    docs: dict[str, list[S.Record]] = {}
    for r in records:
        docs.setdefault(r.group, []).append(r)
    return [
        {"text": "\n".join(r.text for r in rs), "doc_id": g, "source": rs[0].source, "lang": rs[0].lang}
        for g, rs in docs.items()
    ]


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), path)
    return {"file": str(path.name), "sha256": sha256_file(path)}


def build_key(cfg: DataConfig, raw_manifests: dict[str, dict[str, Any]]) -> str:
    """Hash of everything the suite depends on: suite version, build settings, raw files' sha256."""
    c = cfg.resolved()
    settings = {
        k: getattr(c, k)
        for k in ("seed", "val_fraction", "test_fraction", "max_examples_per_task", "max_lm_chars_per_domain",
                  "min_examples_per_label", "held_out_domain", "adaptation_examples")
    }  # fmt: skip
    files = {
        k: {f: m["sha256"] for f, m in sorted(v["files"].items())} for k, v in sorted(raw_manifests.items())
    }
    blob = json.dumps({"version": SUITE_VERSION, "settings": settings, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_suite(
    cfg: DataConfig, raw_manifests: dict[str, dict[str, Any]], out_dir: Path | None = None
) -> dict[str, Any]:
    """Write the suite under ``out_dir`` (default ``cfg.suite_dir``) and return its manifest."""
    c = cfg.resolved()
    out = Path(out_dir or c.suite_dir)
    if c.held_out_domain and c.held_out_domain not in DOMAINS:
        raise DataError(
            f"data.held_out_domain '{c.held_out_domain}' is not a domain; use one of {', '.join(DOMAINS)} or ''"
        )
    domains, mmlu = read_domains(c.raw_dir)
    fractions = {
        "train": 1 - c.val_fraction - c.test_fraction,
        "val": c.val_fraction,
        "test": c.test_fraction,
    }
    manifest: dict[str, Any] = {
        "version": SUITE_VERSION,
        "build_key": build_key(c, raw_manifests),
        "config": {k: v for k, v in asdict(c).items() if k not in ("extra_tasks", "cache_dir")},
        "held_out_domain": c.held_out_domain,
        "sources": {
            k: {**m["source"], "licence": m["licence"], "content": m["content"], "files": len(m["files"])}
            for k, m in sorted(raw_manifests.items())
        },
        "domains": {},
        "tasks": {},
    }
    for spec in TASKS:
        d = domains[spec.domain]
        rng = np.random.default_rng(_seed(c.seed, spec.name))
        records = _balance_none(d.task, rng) if spec.name == "finance_word_sentiment" else d.task
        counts = Counter(r.label for r in records)
        dropped = sorted(lab for lab, n in counts.items() if n < c.min_examples_per_label)
        records = [r for r in records if counts[r.label] >= c.min_examples_per_label]
        labels = sorted({r.label for r in records})
        if len(labels) < 2:
            raise DataError(
                f"{c.raw_dir}: task {spec.name} has fewer than two labels with >= {c.min_examples_per_label} "
                "examples; lower data.min_examples_per_label or re-fetch with python -m gem.prepare --force"
            )
        mapping = assign_splits(
            [r.group for r in records],
            [r.label for r in records],
            rng.integers(2**32),
            c.val_fraction,
            c.test_fraction,
        )
        rows: dict[str, list[S.Record]] = {s: [r for r in records if mapping[r.group] == s] for s in SPLITS}
        if c.max_examples_per_task:
            rows = {s: _cap(rs, round(c.max_examples_per_task * fractions[s]), rng) for s, rs in rows.items()}
        held_out = spec.domain == c.held_out_domain
        if held_out:  # the adaptation budget, stratified: the same number of examples per label
            per_label = max(1, c.adaptation_examples // len(labels))
            rows["train"] = [
                r
                for lab in labels
                for r in _cap([r for r in rows["train"] if r.label == lab], per_label, rng)
            ]
        files = {}
        for s in SPLITS:
            payload = [{"text": r.text, "label": r.label, "doc_id": r.group, "lang": r.lang} for r in rows[s]]
            files[s] = _write_jsonl(payload, out / "tasks" / spec.name / f"{s}.jsonl")
        manifest["tasks"][spec.name] = {
            "domain": spec.domain,
            "kind": "classification",
            "description": spec.description,
            "labels": labels,
            "dropped_labels": dropped,
            "held_out": held_out,
            "counts": {s: len(rows[s]) for s in SPLITS},
            "label_counts": {s: dict(sorted(Counter(r.label for r in rows[s]).items())) for s in SPLITS},
            "groups": {s: len({r.group for r in rows[s]}) for s in SPLITS},
            "files": files,
        }
        # LM documents: the task's split of each group, or a split of their own
        lm_docs = _lm_docs(d.lm)
        if d.lm_follows_task:
            doc_split = {g: mapping[g] for g in {doc["doc_id"] for doc in lm_docs} if g in mapping}
            lm_docs = [doc for doc in lm_docs if doc["doc_id"] in doc_split]  # dropped labels drop their text
        else:
            doc_split = assign_splits(
                [x["doc_id"] for x in lm_docs],
                [""] * len(lm_docs),
                rng.integers(2**32),
                c.val_fraction,
                c.test_fraction,
            )
        by_split = {s: [x for x in lm_docs if doc_split[x["doc_id"]] == s] for s in SPLITS}
        if c.max_lm_chars_per_domain:
            for s in SPLITS:
                budget, kept = c.max_lm_chars_per_domain * fractions[s], []
                for i in rng.permutation(len(by_split[s])):
                    if budget <= 0:
                        break
                    kept.append(int(i))
                    budget -= len(by_split[s][i]["text"])
                by_split[s] = [by_split[s][i] for i in sorted(kept)]
        lm_files = {s: _write_jsonl(by_split[s], out / "lm" / spec.domain / f"{s}.jsonl") for s in SPLITS}
        manifest["domains"][spec.domain] = {
            "held_out": held_out,
            "lm_sources": sorted({x["source"] for x in lm_docs}),
            "tasks": [spec.name],
            "lm": {
                s: {"docs": len(by_split[s]), "chars": sum(len(x["text"]) for x in by_split[s])}
                for s in SPLITS
            },
            "files": lm_files,
        }
    # MMLU few-shot questions: evaluation only (test split), one task per domain that has MMLU subjects
    for domain in ("healthcare", "law", "finance", "stem", "commonsense"):
        qs = [q for q in mmlu if mmlu_domain(q.subject) == domain]
        if not qs:
            continue
        name = f"mmlu_{domain}"
        payload = [
            {
                "question": q.question,
                "choices": list(q.choices),
                "label": q.label,
                "subject": q.subject,
                "lang": q.lang,
                "doc_id": q.group,
            }
            for q in qs
        ]
        files = {
            s: _write_jsonl(payload if s == "test" else [], out / "tasks" / name / f"{s}.jsonl")
            for s in SPLITS
        }
        manifest["tasks"][name] = {
            "domain": domain,
            "kind": "multiple_choice",
            "description": "MMLU dev questions (lm-eval few-shot samples), English + de/es/fr/hi/it/pt/th; evaluation only",
            "labels": [],
            "held_out": domain == c.held_out_domain,
            "counts": {s: len(payload) if s == "test" else 0 for s in SPLITS},
            "languages": dict(sorted(Counter(q.lang for q in qs).items())),
            "subjects": sorted({q.subject for q in qs}),
            "files": files,
        }
        manifest["domains"][domain]["tasks"].append(name)
    atomic_write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", out / MANIFEST)
    return manifest


def read_manifest(suite_dir: Path) -> dict[str, Any] | None:
    path = suite_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def suite_is_current(suite_dir: Path, key: str) -> bool:
    """The suite in ``suite_dir`` was built with ``key`` and every file still has its recorded sha256."""
    m = read_manifest(suite_dir)
    if m is None or m.get("build_key") != key:
        return False
    for sub, entries in (("lm", m["domains"]), ("tasks", m["tasks"])):
        for name, entry in entries.items():
            for f in entry["files"].values():
                path = suite_dir / sub / name / f["file"]
                if not path.is_file() or sha256_file(path) != f["sha256"]:
                    return False
    return True


class Suite:
    """The built suite on disk: LM text per domain and split, tasks by name (plus ``extra_tasks``)."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg.resolved()
        self.dir = self.cfg.suite_dir
        manifest = read_manifest(self.dir)
        if manifest is None:
            raise DataError(
                f"{self.dir / MANIFEST} is missing or unreadable: run `make data-gem` "
                f"(python -m gem.prepare{' --quick' if self.cfg.quick else ''})"
            )
        self.manifest = manifest
        self.domains: list[str] = list(manifest["domains"])
        self.held_out_domain: str = manifest.get("held_out_domain", "")
        self._tasks: dict[str, TaskData] = {}
        self._extra: dict[str, Callable[[], TaskData]] = {}
        for f in self.cfg.extra_tasks:
            self._add_extra(Path(f))

    def _add_extra(self, path: Path) -> None:
        task = read_task_file(path, self.cfg.seed, self.cfg.val_fraction, self.cfg.test_fraction)
        if task.name in self.manifest["tasks"] or task.name in self._tasks:
            raise DataError(f"{path}: task name '{task.name}' is already in the suite; rename the task")
        if task.domain and task.domain not in DOMAINS:
            raise DataError(f"{path}: domain '{task.domain}' is not one of {', '.join(DOMAINS)}")
        self._tasks[task.name] = task

    @property
    def training_domains(self) -> list[str]:
        """Domains in the generalist's training mix (every domain but the held-out one)."""
        return [d for d in self.domains if d != self.held_out_domain]

    @property
    def task_names(self) -> list[str]:
        return list(self.manifest["tasks"]) + [t for t in self._tasks if t not in self.manifest["tasks"]]

    def lm_texts(self, domain: str, split: str) -> list[str]:
        if domain not in self.manifest["domains"]:
            raise DataError(f"{self.dir}: no domain '{domain}'; the suite has {', '.join(self.domains)}")
        path = self.dir / "lm" / domain / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"missing file {path}: run `python -m gem.prepare --force`")
        return [row["text"] for _, row in read_jsonl_rows(path)] if path.stat().st_size else []

    def task(self, name: str) -> TaskData:
        if name in self._tasks:
            return self._tasks[name]
        entry = self.manifest["tasks"].get(name)
        if entry is None:
            raise DataError(f"{self.dir}: no task '{name}'; tasks: {', '.join(self.task_names)}")
        labels = entry["labels"]
        splits: dict[str, list[Example]] = {}
        for s in SPLITS:
            path = self.dir / "tasks" / name / f"{s}.jsonl"
            if not path.is_file():
                raise DataError(f"missing file {path}: run `python -m gem.prepare --force`")
            rows = read_jsonl_rows(path) if path.stat().st_size else []
            examples = []
            for n, row in rows:
                try:
                    if entry["kind"] == "multiple_choice":
                        text = f"Question: {row['question']}\nAnswer:"  # lm-eval's mmlu/continuation prompt
                        ex = Example(
                            text,
                            int(row["label"]),
                            tuple(" " + c for c in row["choices"]),
                            row["doc_id"],
                            row["lang"],
                        )
                    else:
                        ex = Example(row["text"], labels.index(row["label"]), (), row["doc_id"], row["lang"])
                except (KeyError, ValueError, TypeError) as exc:
                    raise DataError(
                        f"{path}: line {n}: not a suite row ({exc!r}); run `python -m gem.prepare --force`"
                    ) from exc
                examples.append(ex)
            splits[s] = examples
        metrics = ["acc"] if entry["kind"] == "multiple_choice" else ["macro_f1"]
        task = TaskData(
            name, entry["domain"], entry["kind"], labels, splits, metrics, str(self.dir / "tasks" / name)
        )
        self._tasks[name] = task
        return task

    def training_text(self) -> list[str]:
        """The tokenizer's corpus: LM train text and classification train text of the training domains."""
        texts = []
        for d in self.training_domains:
            texts += self.lm_texts(d, "train")
        for name in self.task_names:
            t = self.task(name)
            if t.domain != self.held_out_domain:
                texts += [e.text for e in t.split("train")]
        return texts


def load_suite(cfg: DataConfig) -> Suite:
    return Suite(cfg)
