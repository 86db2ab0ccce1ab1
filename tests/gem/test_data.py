"""GEM data: each source reader on an excerpt in its package's own format, the suite builder and prepare.

The fixtures in ``tests/fixtures/gem/raw/`` are excerpts of the real files (``make_fixtures.py`` wrote them);
``raw_root`` copies them into a temp data root and writes the ``manifest.json`` files ``shared.fetch`` would,
so ``gem.prepare`` runs without network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import re
import shutil
import zlib
from pathlib import Path

import pytest

from gem.data import DOMAINS, DataConfig, describe, format_description, load_suite
from gem.data import sources as S
from gem.data.suite import MANIFEST, build_suite
from gem.prepare import fetch_sources, main, prepare
from shared.errors import ConfigError, DataError, run_cli

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gem" / "raw"
WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def write_manifests(raw: Path) -> None:
    """The manifest ``shared.fetch.fetch_package`` writes, for files already in place."""
    for key, src in S.SOURCES.items():
        folder = raw / key
        files = {
            str(p.relative_to(folder)): {
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                "bytes": p.stat().st_size,
            }
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"
        }
        pkg = src.package
        manifest = {
            "source": {"package": pkg.name, "version": pkg.version, "file": "fixture", "sha256": pkg.sha256},
            "licence": pkg.licence,
            "content": src.content,
            "patterns": list(src.patterns),
            "files": files,
            "counts": {"files": len(files), "bytes": sum(f["bytes"] for f in files.values())},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))


def tiny_config(root: Path, **kw) -> DataConfig:
    base = dict(root=str(root), min_examples_per_label=2, max_examples_per_task=0, vocab_size=320, min_frequency=2,
                adaptation_examples=4, val_fraction=0.2, test_fraction=0.2, cache_dir=str(root / "no-cache"))  # fmt: skip
    return DataConfig(**{**base, **kw})


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    shutil.copytree(FIX, tmp_path / "raw")
    write_manifests(tmp_path / "raw")
    return tmp_path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    root = tmp_path_factory.mktemp("gem")
    shutil.copytree(FIX, root / "raw")
    write_manifests(root / "raw")
    cfg = tiny_config(root)
    assert prepare(cfg, log=False)
    return cfg


# --- config ------------------------------------------------------------------------------------------------
def test_every_config_field_has_an_attributes_line():
    doc = DataConfig.__doc__ or ""
    block = doc.split("Attributes:", 1)[1]
    documented = dict(re.findall(r"^\s{8}(\w+): (.+)$", block, flags=re.M))
    fields = [f.name for f in dataclasses.fields(DataConfig)]
    assert sorted(documented) == sorted(fields)


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError, match="val_fraction"):
        DataConfig(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="vocab_size"):
        DataConfig(vocab_size=100)
    quick = DataConfig(quick=True).resolved()
    assert (quick.max_examples_per_task, quick.max_lm_chars_per_domain) == (600, 200_000)
    assert DataConfig(quick=True).suite_dir.name == "suite-quick"


# --- source readers ----------------------------------------------------------------------------------------
def test_icd10_titles_labelled_by_chapter_grouped_by_block():
    path = FIX / "icd10" / "icd_10_v2019.xml"
    recs = S.read_icd10(path)
    text = path.read_text(encoding="utf-8")
    n_titles = text.count('type="category"') + text.count('type="subcategory"')
    assert len(recs) == n_titles
    assert {r.label.split()[0] for r in recs} == {"I", "II", "III"}
    cholera = next(r for r in recs if r.text == "Cholera due to Vibrio cholerae 01, biovar cholerae")
    assert cholera.label == "I Certain infectious and parasitic diseases" and cholera.group == "icd10:A00-A09"


def test_icd10_broken_xml_names_line(tmp_path: Path):
    bad = tmp_path / "icd.xml"
    bad.write_text("<icd_10_v2019>\n<item type='chapter'>\n<name>I</name>\n</icd_10_v2019>\n")
    with pytest.raises(DataError, match=r"icd.xml: not valid XML at line 4"):
        S.read_icd10(bad)


def test_chatterbot_dialogues_topics_and_string_quirk(tmp_path: Path):
    recs = S.read_chatterbot(FIX / "chatterbot")
    assert {r.lang for r in recs} == {"en", "de", "ja"}
    money = [r for r in recs if r.label == "money" and r.lang == "en"]
    assert money and all("\n" in r.text or len(r.text) > 0 for r in money)
    f = tmp_path / "english" / "trivia.yml"
    f.parent.mkdir()
    f.write_text("categories:\n- trivia\nconversations:\n- - Q?\n  - A.\n- 'Who? - Me.'\n", encoding="utf-8")
    got = S.read_chatterbot_file(f, "en")
    assert [r.text for r in got] == ["Q?\nA.", "Who? - Me."]
    f.write_text("conversations:\n- - a\n  - [b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"trivia.yml: not valid YAML at line \d"):
        S.read_chatterbot_file(f, "en")


def test_mmlu_cot_and_translated_samples():
    cot = S.read_mmlu_cot(FIX / "lm_eval" / "mmlu" / "flan_cot_fewshot" / "mmlu_anatomy.yaml")
    assert len(cot) == 5 and all(len(q.choices) == 4 for q in cot)
    assert cot[0].question.startswith("Which of the following is the body cavity")
    assert cot[0].choices == ("Abdominal", "Cranial", "Pleural", "Spinal") and cot[0].label == 1
    de = S.read_mmlu_llama3(FIX / "lm_eval" / "llama3" / "instruct" / "mmlu_de" / "mmlu_de_anatomy.yaml")
    assert {q.lang for q in de} == {"de"} and {q.subject for q in de} == {"anatomy"}
    assert all(0 <= q.label < 4 for q in de)


def test_wiki_dump_plain_text_without_markup_or_redirects():
    recs = S.read_wiki_dump(FIX / "gensim" / WIKI)
    assert {r.group for r in recs} == {"wiki:Albedo", "wiki:Autism"}  # AccessibleComputing is a redirect
    for r in recs:
        assert not re.search(r"\[\[|\{\{|<ref|'''", r.text)
    assert S.clean_wikitext("'''A''' [[b|c]] {{x|{{y}}}} d<ref>e</ref>.") == "A c d."


def test_gensim_line_corpora(tmp_path: Path):
    pang = S.read_pang_lee(FIX / "gensim" / "pang_lee_polarity.cor")
    assert [r.label for r in pang].count("negative") == 10 and [r.label for r in pang].count("positive") == 10
    assert len(S.read_lee_background(FIX / "gensim" / "lee_background.cor")) == 12
    qw = S.read_questions_words(FIX / "gensim" / "questions-words.txt")
    assert {r.label for r in qw} == {"capital-common-countries", "capital-world", "currency"}
    assert (
        qw[0].text == "Athens Greece Baghdad Iraq"
        and qw[0].group == "analogy:capital-common-countries/Athens/Greece"
    )
    bad = tmp_path / "p.cor"
    bad.write_bytes(b"__label__pos good .\n__label__meh odd .\n")
    with pytest.raises(DataError, match=r"p.cor: line 2 does not start with __label__pos"):
        S.read_pang_lee(bad)


def test_newsgroups_pickle_without_headers_and_refuses_code(tmp_path: Path):
    recs = S.read_newsgroups(FIX / "gensim" / "mini_newsgroup")
    assert sorted({r.label for r in recs}) == ["alt.atheism", "sci.space"] and len(recs) == 12
    assert not any("Newsgroups:" in r.text for r in recs)  # the header names the label
    evil = tmp_path / "mini_newsgroup"
    evil.write_bytes(zlib.compress(b"cos\nsystem\n(S'echo pwned'\ntR."))
    with pytest.raises(DataError, match=r"os\.system is not allowed"):
        S.read_newsgroups(evil)
    evil.write_bytes(zlib.compress(pickle.dumps({"data": ["x"]}, protocol=0)))
    with pytest.raises(DataError, match="not the gensim mini_newsgroup pickle"):
        S.read_newsgroups(evil)


def test_spacy_examples_parsed_with_ast_never_run(tmp_path: Path):
    recs = S.read_spacy(FIX / "spacy")
    assert {r.label for r in recs} == {"de", "fr", "ja"}  # xx (multi-language) is skipped
    de = [r.text for r in recs if r.label == "de"]
    assert de[0] == "Die ganze Stadt ist ein Startup: Shenzhen ist das Silicon Valley für Hardware-Firmen"
    f = tmp_path / "zz" / "examples.py"
    f.parent.mkdir()
    f.write_text('import os\nsentences = [\n    "ok",\n    os.system("echo pwned"),\n]\n')
    with pytest.raises(DataError, match=r"examples.py: line 4: sentence 1 is not a string literal"):
        S.read_spacy_examples(f)


def test_spdx_paragraphs_grouped_by_family():
    recs = S.read_spdx(FIX / "spdx")
    assert {r.group for r in recs} >= {"spdx:BSD", "spdx:MIT", "spdx:ISC"}
    labels = {r.group: r.label for r in recs}
    assert labels["spdx:MIT"] == "osi_approved" and labels["spdx:Beerware"] == "not_osi_approved"
    assert all(len(r.text) >= 40 for r in recs)
    assert [S.licence_family(x) for x in ("GPL-2.0+", "CC-BY-SA-4.0", "OLDAP-2.8", "Zlib")] == [
        "GPL",
        "CC",
        "OLDAP",
        "Zlib",
    ]


def test_loughran_mcdonald_categories(tmp_path: Path):
    recs = S.read_loughran_mcdonald(FIX / "lm_lexicon" / "LM.csv")
    assert {r.label for r in recs} == {
        "negative",
        "positive",
        "uncertainty",
        "litigious",
        "constraining",
        "none",
    }
    assert all(r.text == r.text.lower() for r in recs)
    bad = tmp_path / "LM.csv"
    bad.write_text(
        "Word,Negative,Positive,Uncertainty,Litigious,Constraining\nABANDON,2009,0,0,0,0\nABLE,x,0,0,0,0\n"
    )
    with pytest.raises(DataError, match=r"LM.csv: line 3 has a missing or non-numeric"):
        S.read_loughran_mcdonald(bad)


# --- the suite ---------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_suite_splits_disjoint_by_document_and_counts_match(built: DataConfig):
    m = json.loads((built.suite_dir / MANIFEST).read_text())
    assert list(m["domains"]) == list(DOMAINS)
    for name, entry in m["tasks"].items():
        groups = {
            s: {r["doc_id"] for r in _rows(built.suite_dir / "tasks" / name / f"{s}.jsonl")}
            for s in ("train", "val", "test")
        }
        assert (
            not (groups["train"] & groups["val"])
            and not (groups["train"] & groups["test"])
            and not (groups["val"] & groups["test"])
        )
        for s in ("train", "val", "test"):
            rows = _rows(built.suite_dir / "tasks" / name / f"{s}.jsonl")
            assert len(rows) == entry["counts"][s]
            if entry["kind"] == "classification":
                assert sum(entry["label_counts"][s].values()) == len(rows)
                assert {r["label"] for r in rows} <= set(entry["labels"])
    for domain, entry in m["domains"].items():
        docs = {s: _rows(built.suite_dir / "lm" / domain / f"{s}.jsonl") for s in ("train", "val", "test")}
        for s in docs:
            assert (
                len(docs[s]) == entry["lm"][s]["docs"]
                and sum(len(d["text"]) for d in docs[s]) == entry["lm"][s]["chars"]
            )
        ids = [{d["doc_id"] for d in docs[s]} for s in docs]
        assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    # a document's LM text and its task examples share a split (ICD-10 blocks)
    lm_test = {d["doc_id"] for d in _rows(built.suite_dir / "lm" / "healthcare" / "test.jsonl")}
    task_train = {r["doc_id"] for r in _rows(built.suite_dir / "tasks" / "icd10_chapter" / "train.jsonl")}
    assert lm_test and not (lm_test & task_train)


def test_suite_is_deterministic_and_seed_dependent(raw_root: Path, built: DataConfig):
    cfg = tiny_config(raw_root)
    manifests = fetch_sources(cfg, log=False)
    build_suite(cfg, manifests, raw_root / "a")
    build_suite(cfg, manifests, raw_root / "b")
    build_suite(dataclasses.replace(cfg, seed=1), manifests, raw_root / "c")

    def digest(d: Path) -> dict[str, str]:
        return {
            str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*.jsonl"))
        }

    assert digest(raw_root / "a") == digest(raw_root / "b")
    assert digest(raw_root / "a") != digest(raw_root / "c")


def test_held_out_domain_budget_and_tokenizer_corpus(built: DataConfig):
    suite = load_suite(built)
    assert suite.held_out_domain == "domain_adaptive" and "domain_adaptive" not in suite.training_domains
    review = suite.task("review_sentiment")
    assert len(review.split("train")) == built.adaptation_examples
    assert review.label_counts("train") == {"negative": 2, "positive": 2}
    corpus = set(suite.training_text())
    assert not corpus & {e.text for e in review.split("train")}
    assert not corpus & set(suite.lm_texts("domain_adaptive", "train"))
    mc = suite.task("mmlu_healthcare")
    assert mc.kind == "multiple_choice" and not mc.split("train") and mc.split("test")
    assert mc.split("test")[0].text.startswith("Question: ") and mc.split("test")[0].choices[0].startswith(
        " "
    )


def test_describe_and_extra_task(built: DataConfig):
    bench = Path(__file__).resolve().parents[1] / "fixtures" / "gem" / "benchmarks"
    suite = load_suite(dataclasses.replace(built, extra_tasks=[str(bench / "sciq.jsonl")]))
    rows = describe(suite)
    assert [r["name"] for r in rows if r["kind"] == "lm"] == list(DOMAINS)
    sciq = next(r for r in rows if r["name"] == "sciq")
    assert sciq["domain"] == "stem" and sciq["train"] + sciq["val"] + sciq["test"] == 4
    table = format_description(rows)
    assert "icd10_chapter" in table and "(held out)" in table
    with pytest.raises(DataError, match="no task 'nope'"):
        suite.task("nope")


# --- prepare -----------------------------------------------------------------------------------------------
def test_prepare_is_idempotent_and_force_rebuilds(raw_root: Path, capsys: pytest.CaptureFixture):
    cfg = tiny_config(raw_root)
    assert prepare(cfg, log=False)
    files = {p: p.stat().st_mtime_ns for p in cfg.suite_dir.rglob("*") if p.is_file()}
    assert (cfg.suite_dir / "tokenizer.json").is_file()
    m = json.loads((cfg.suite_dir / MANIFEST).read_text())
    assert m["tokenizer"]["vocab_size"] == cfg.vocab_size and m["domains"]["law"]["lm"]["train"]["tokens"] > 0
    assert not prepare(cfg, log=False)
    assert {p: p.stat().st_mtime_ns for p in cfg.suite_dir.rglob("*") if p.is_file()} == files
    (cfg.suite_dir / "tasks" / "licence_osi" / "test.jsonl").write_text("")  # a damaged file is rebuilt
    assert prepare(cfg, log=False)
    assert prepare(cfg, force=False, log=False) is False


def test_prepare_cli_reports_a_corrupt_raw_file_as_one_line(raw_root: Path, capsys: pytest.CaptureFixture):
    (raw_root / "raw" / "spdx" / "db.json").write_text('{"version": "2.5",\n "licenses": [}')
    write_manifests(raw_root / "raw")  # as if extracted so: no re-fetch, the reader must catch it
    cfg = tiny_config(raw_root)
    args = ["--root", str(raw_root), "--cache-dir", cfg.cache_dir]
    code = run_cli(main, args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.match(r"error: .*db.json: line 2 is not valid JSON", err)
