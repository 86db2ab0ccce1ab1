"""GEM data: JSONL and lm-eval YAML adapters (and every bad row), the BPE tokenizer, datasets and collate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from gem.data import (
    ClassificationDataset,
    Example,
    LMBlockDataset,
    MultipleChoiceDataset,
    collate_classification,
    collate_lm,
    collate_multiple_choice,
    load_tokenizer,
    make_loader,
    read_jsonl_task,
    read_lm_eval_yaml,
    read_task_file,
    train_tokenizer,
)
from shared.errors import DataError

BENCH = Path(__file__).resolve().parents[1] / "fixtures" / "gem" / "benchmarks"
MULTILINGUAL = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.",
    "Die ganze Stadt ist ein Startup: Shenzhen ist das Silicon Valley für Hardware-Firmen",
    "アップルがイギリスの新興企業を１０億ドルで購入を検討",
    "Что такое история?  Tab\there, emoji 🙂 and a trailing space ",
    "ตำราปรัชญา เพลงสวด",
    "אני לא יודע",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(MULTILINGUAL * 20, vocab_size=320, domains=["law", "finance"], min_frequency=2)


# --- JSONL ---------------------------------------------------------------------------------------------------
def test_jsonl_classification_with_split_field():
    t = read_jsonl_task(BENCH / "financial_phrasebank.jsonl", domain="finance")
    assert (t.name, t.kind, t.domain, t.labels) == (
        "financial_phrasebank",
        "classification",
        "finance",
        ["negative", "neutral", "positive"],
    )
    assert t.counts() == {"train": 3, "val": 1, "test": 2}
    assert [e.label for e in t.split("train")] == [2, 0, 1]


def test_jsonl_multiple_choice_split_by_seed():
    t = read_jsonl_task(BENCH / "sciq.jsonl", seed=0)
    assert t.kind == "multiple_choice" and t.domain == "stem" and sum(t.counts().values()) == 4
    ex = next(e for s in ("train", "val", "test") for e in t.split(s) if e.text.startswith("What phenomenon"))
    assert ex.choices[0] == " coriolis effect" and ex.label == 0
    again = read_jsonl_task(BENCH / "sciq.jsonl", seed=0)
    assert again.splits == t.splits


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "a", "label": "x"}\n{"label": "y"}\n', r"bad.jsonl: line 2: missing field 'text'"),
        ('{"text": "a", "label": "x"}\n\n{"text": "  ", "label": "x"}\n', r"bad.jsonl: line 3: empty 'text'"),
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"\n', r"bad.jsonl: line 2: invalid JSON"),
        ('{"text": "a", "label": "x"}\n[1, 2]\n', r"bad.jsonl: line 2: expected a JSON object"),
        ('{"text": "a", "label": "x"}\n{"text": "b"}\n', r"bad.jsonl: line 2: .*label"),
        (
            '{"question": "q", "choices": ["a", "b"], "label": 2}\n',
            r"bad.jsonl: line 1: label 2 outside the choices 0..1",
        ),
        ('{"text": "a", "label": "x", "split": "dev2"}\n', r"bad.jsonl: line 1: 'split' must be one of"),
    ],
)
def test_jsonl_bad_rows_name_file_and_line(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_jsonl_task(path)


def test_jsonl_invalid_utf8_and_label_outside_label_file(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "pos"}\n{"text": "caf\xe9", "label": "pos"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: invalid UTF-8 at byte 14"):
        read_jsonl_task(path)
    path.write_text('{"text": "ok", "label": "pos"}\n{"text": "meh", "label": "mixed"}\n', encoding="utf-8")
    (tmp_path / "bad.labels.txt").write_text("neg\npos\n")
    with pytest.raises(
        DataError, match=r"bad.jsonl: line 2: label 'mixed' outside the label set \(neg, pos\)"
    ):
        read_jsonl_task(path)


# --- lm-eval YAML --------------------------------------------------------------------------------------------
def test_lm_eval_yaml_fixed_choices_is_classification():
    t = read_lm_eval_yaml(BENCH / "pubmedqa_local.yaml")
    assert (t.name, t.domain, t.kind, t.labels, t.metrics) == (
        "pubmedqa_local",
        "healthcare",
        "classification",
        ["yes", "no", "maybe"],
        ["acc"],
    )
    assert t.counts() == {"train": 2, "val": 0, "test": 1}
    ex = t.split("test")[0]
    assert ex.text == (
        "Abstract: Telephone counseling was compared with usual care.\n"
        "Question: Can tailored interventions increase mammography use among HMO women?\nAnswer:"
    )
    assert ex.label == 2 and ex.choices == (" yes", " no", " maybe")


def test_lm_eval_yaml_include_and_per_doc_choices():
    t = read_task_file(BENCH / "piqa_local.yaml")
    assert t.kind == "multiple_choice" and t.metrics == ["acc", "acc_norm"]
    ex = t.split("train")[1]
    assert ex.text == "Question: To permanently attach metal legs to a chair, you can\nAnswer:"
    assert ex.choices == (
        " Weld the metal together to get it to stay firmly in place",
        " Nail the metal together to get it to stay firmly in place",
    )
    assert ex.label == 0 and t.counts()["test"] == 2


BASE = "task: t\ndataset_path: piqa.jsonl\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{goal}}'\ndoc_to_target: label\ndoc_to_choice: '{{[sol1, sol2]}}'\n"


@pytest.mark.parametrize(
    "extra, message",
    [
        ("process_docs: !function utils.process_docs\n", r"t.yaml: line 8: '!function' is not supported"),
        ("generation_kwargs: {}\n", r"t.yaml: key 'generation_kwargs' is not supported"),
        ("num_fewshot: 5\n", r"t.yaml: num_fewshot 5 is not supported"),
        ("metric_list:\n  - metric: bleu\n", r"t.yaml: metric_list\[0\] metric 'bleu' is not supported"),
    ],
)
def test_lm_eval_yaml_refusals(tmp_path: Path, extra: str, message: str):
    (tmp_path / "piqa.jsonl").write_text((BENCH / "piqa.jsonl").read_text())
    (tmp_path / "t.yaml").write_text(BASE + extra)
    with pytest.raises(DataError, match=message):
        read_lm_eval_yaml(tmp_path / "t.yaml")


def test_lm_eval_yaml_output_type_hub_id_and_bad_doc(tmp_path: Path):
    (tmp_path / "piqa.jsonl").write_text(
        '{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n{"goal": "g", "sol1": "a", "label": 1}\n'
    )
    y = tmp_path / "t.yaml"
    y.write_text(BASE.replace("multiple_choice", "generate_until"))
    with pytest.raises(DataError, match="output_type 'generate_until' is not supported"):
        read_lm_eval_yaml(y)
    y.write_text(BASE.replace("piqa.jsonl", "ybisk/piqa"))
    with pytest.raises(DataError, match="Hugging Face Hub datasets cannot be downloaded"):
        read_lm_eval_yaml(y)
    y.write_text(BASE)
    with pytest.raises(DataError, match=r"piqa.jsonl: line 2: missing field 'sol2'"):
        read_lm_eval_yaml(y)
    y.write_text(BASE.replace("'{{goal}}'", "'{{goal | upper}}'"))
    with pytest.raises(DataError, match="Jinja filter"):
        read_lm_eval_yaml(y)
    y.write_text(BASE.replace("'{{goal}}'", "'{{goal.__class__}}'"))
    with pytest.raises(DataError, match="no field '__class__'"):
        read_lm_eval_yaml(y)


# --- tokenizer -----------------------------------------------------------------------------------------------
def test_tokenizer_round_trip_specials_and_save(tok, tmp_path: Path):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 320 and tok.domain_tag_id("law") == 4
    unseen = "Grüße aus Köln: 42 € — ¿qué tal? 漢字 ﷺ"
    for text in [*MULTILINGUAL, unseen]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("MIT", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.decode(ids) == "MIT"
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode(unseen) == tok.encode(unseen)


def test_tokenizer_training_is_deterministic(tok):
    other = train_tokenizer(MULTILINGUAL * 20, vocab_size=320, domains=["law", "finance"], min_frequency=2)
    assert other.tk.to_str() == tok.tk.to_str()
    assert train_tokenizer(MULTILINGUAL[:2] * 20, vocab_size=320).tk.to_str() != tok.tk.to_str()


def test_vocabulary_matching_nothing_is_refused(tmp_path: Path):
    wl = Tokenizer(
        models.WordLevel({"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "hello": 4}, unk_token="<unk>")
    )
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    wl.save(str(tmp_path / "tokenizer.json"))
    foreign = load_tokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(
        DataError, match=r"data/x/test.jsonl: 100% of the tokens of task language_id are <unk>"
    ):
        foreign.check_coverage(["Что такое история?", "ตำราปรัชญา"], "language_id", "data/x/test.jsonl")
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(DataError, match="not a tokenizers JSON file"):
        load_tokenizer(tmp_path / "broken.json")


# --- datasets ------------------------------------------------------------------------------------------------
def test_lm_blocks_pack_documents_with_eos():
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]
    ds = LMBlockDataset(docs, context_len=4, eos_id=2, domain_id=5, seed=None)
    stream = [10, 11, 12, 2, 20, 21, 2, 30, 31, 32, 33, 2]
    assert len(ds) == (len(stream) - 1) // 4 == 2
    b = collate_lm([ds[0], ds[1]])
    assert b["input_ids"].tolist() == [stream[0:4], stream[4:8]]
    assert b["targets"].tolist() == [stream[1:5], stream[5:9]]
    assert b["domain_id"].tolist() == [5, 5]
    shuffled = LMBlockDataset(docs, context_len=4, eos_id=2, seed=3)
    assert (
        sorted(shuffled.stream.tolist()) == sorted(stream)
        and shuffled.stream.tolist() == LMBlockDataset(docs, 4, 2, seed=3).stream.tolist()
    )


def test_classification_collate_pads_and_masks(tok):
    exs = [
        Example("Operating profit rose", 1),
        Example("Die ganze Stadt ist ein Startup und so weiter und so fort", 0),
    ]
    ds = ClassificationDataset(exs, tok, max_len=8, task_id=3, domain_id=2)
    b = collate_classification([ds[0], ds[1]], pad_id=tok.pad_id)
    n0 = len(tok.encode("Operating profit rose")) + 2
    assert b["input_ids"].shape == (2, 8) and b["lengths"].tolist() == [min(n0, 8), 8]
    assert b["attention_mask"].sum(1).tolist() == b["lengths"].tolist()
    assert b["input_ids"][0, n0:].eq(tok.pad_id).all() and b["input_ids"][:, 0].eq(tok.bos_id).all()
    assert b["input_ids"][1, -1] == tok.eos_id  # truncation keeps <eos> last
    assert (
        b["labels"].tolist() == [1, 0]
        and b["task_ids"].tolist() == [3, 3]
        and b["domain_ids"].tolist() == [2, 2]
    )


def test_multiple_choice_score_mask_marks_continuations(tok):
    exs = [
        Example("Question: 2+2?\nAnswer:", 1, (" three", " four")),
        Example("Q: sky?\nA:", 0, (" blue", " green", " red")),
    ]
    ds = MultipleChoiceDataset(exs, tok, max_len=64)
    b = collate_multiple_choice([ds[0], ds[1]], pad_id=tok.pad_id)
    assert b["input_ids"].shape[0] == 5 and b["example_index"].tolist() == [0, 0, 1, 1, 1]
    for r in range(5):
        ex = exs[b["example_index"][r]]
        c = ex.choices[[0, 1, 0, 1, 2][r]]
        scored = b["input_ids"][r, 1:][
            b["score_mask"][r, :-1]
        ].tolist()  # tokens predicted at masked positions
        assert scored == tok.encode(c)
    assert b["labels"].tolist() == [1, 0] and b["n_choices"].tolist() == [2, 3]


def test_make_loader_order_depends_only_on_seed():
    ds = LMBlockDataset([list(range(3, 60))], context_len=4, eos_id=2, seed=None)

    def order(seed: int) -> list[int]:
        return [int(b["input_ids"][0, 0]) for b in make_loader(ds, 1, True, seed, collate_lm)]

    assert order(7) == order(7) and order(7) != order(8) and sorted(order(7)) == sorted(order(8))


def test_suite_json_rows_match_the_jsonl_adapter_schema(tmp_path: Path):
    # the suite's own task rows are valid input for the user-facing adapter
    rows = [{"text": "Cholera", "label": "I Certain infectious", "doc_id": "icd10:A00-A09", "lang": "en"},
            {"text": "Typhoid fever", "label": "I Certain infectious", "doc_id": "icd10:A00-A09", "lang": "en"},
            {"text": "Neoplasm", "label": "II Neoplasms", "doc_id": "icd10:C00-C14", "lang": "en"}]  # fmt: skip
    path = tmp_path / "icd.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = read_jsonl_task(path, val_fraction=0.0, test_fraction=0.5)
    where = {e.text: s for s in ("train", "val", "test") for e in t.split(s)}
    assert where["Cholera"] == where["Typhoid fever"]  # one doc_id, one split
    assert (
        t.labels == ["I Certain infectious", "II Neoplasms"]
        and torch.tensor([e.label for e in t.split("train")]).ge(0).all()
    )
