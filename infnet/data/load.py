"""``load_dataset``: raw files -> encoded tensors -> (spec, train, val, test), with an on-disk cache.

The cache file ``<cache_dir>/<dataset>-<key>.pt`` is keyed on a hash of the feature config, the data config
fields that change the rows (``max_rows``), the size and mtime of every source file and ``CACHE_VERSION``, so
editing the YAML or replacing a file rebuilds it. Cached tensors are range-checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infnet.data.dataset import DataConfig, DenseSequence, FeatureSpec, FieldSpec, HistorySequence, RecDataset
from infnet.data.features import (
    FEATURE_CONFIG_DIR,
    SPLITS,
    EncodedData,
    FeatureConfig,
    encode_frame,
    load_feature_config,
)
from infnet.data.sources import (
    KUAIRAND_STAT_FILE,
    KUAIRAND_USER_FILE,
    KUAIRAND_VIDEO_FILE,
    MOVIELENS_FILES,
    READERS,
    TENREC_FILE,
    kuairand_folder,
    table_files,
)
from shared.checkpoint import atomic_save
from shared.config import config_to_dict
from shared.errors import ConfigError, DataError
from shared.log import get_logger

CACHE_VERSION = 2  # 2: tag lists and ids read as canonical strings


def feature_config_path(cfg: DataConfig) -> Path:
    if cfg.dataset == "table" and not cfg.feature_config:
        raise ConfigError(
            "data.dataset table needs data.feature_config: the YAML naming your files and columns "
            "(see 'Bring your own data' in infnet/README.md)"
        )
    return Path(cfg.feature_config) if cfg.feature_config else FEATURE_CONFIG_DIR / f"{cfg.dataset}.yaml"


def dataset_folder(cfg: DataConfig) -> Path:
    """``<root>/<dataset>``; for your own table, the feature config's folder (its paths are relative to it)."""
    if cfg.dataset == "table":
        return feature_config_path(cfg).resolve().parent
    return Path(cfg.root) / cfg.dataset


def source_files(cfg: DataConfig, fcfg: FeatureConfig) -> list[Path]:
    folder = dataset_folder(cfg)
    if cfg.dataset == "table":
        return list(table_files(folder, fcfg).values())
    if cfg.dataset == "movielens100k":
        return [folder / f for f in MOVIELENS_FILES.values()]
    if cfg.dataset == "kuairand_pure":
        folder = kuairand_folder(folder)
        names = [*fcfg.kuairand.log_files, KUAIRAND_USER_FILE, KUAIRAND_VIDEO_FILE]
        return [folder / f for f in names + ([KUAIRAND_STAT_FILE] if fcfg.kuairand.use_statistics else [])]
    return [folder / TENREC_FILE]


def cache_key(cfg: DataConfig, fcfg: FeatureConfig, files: list[Path]) -> str:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "features": config_to_dict(fcfg),
            "max_rows": cfg.max_rows,
            "files": stats,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _to_state(enc: EncodedData) -> dict[str, Any]:
    seqs = []
    for s in enc.sequences:
        if isinstance(s, DenseSequence):
            seqs.append({"kind": "dense", "tokens": s.tokens})
        else:
            seqs.append(
                {"kind": "history", "events": s.events, "start": s.start, "end": s.end, "max_len": s.max_len}
            )
    spec = enc.spec
    return {
        "spec": {
            "categorical": [[f.name, f.vocab_size, f.max_len] for f in spec.categorical],
            "sequences": [[f.name, f.vocab_size, f.max_len] for f in spec.sequences],
            "tasks": list(spec.tasks),
            "group_field": spec.group_field,
        },
        "cat": enc.cat,
        "sequences": seqs,
        "labels": enc.labels,
        "group": enc.group,
        "part": enc.part,
    }


def _from_state(state: dict[str, Any]) -> EncodedData:
    s = state["spec"]
    spec = FeatureSpec(
        [FieldSpec(*f) for f in s["categorical"]],
        [FieldSpec(*f) for f in s["sequences"]],
        s["tasks"],
        s["group_field"],
    )
    seqs = [
        DenseSequence(q["tokens"])
        if q["kind"] == "dense"
        else HistorySequence(q["events"], q["start"], q["end"], q["max_len"])
        for q in state["sequences"]
    ]
    return EncodedData(spec, state["cat"], seqs, state["labels"], state["group"], state["part"])


def _range_error(where: str, what: str, lo: int, hi: int, vocab: int) -> DataError:
    return DataError(
        f"{where}: {what} has ids in [{lo}, {hi}] but its vocabulary is [0, {vocab}); "
        "the processed tensors do not match the feature spec: delete the file to rebuild it"
    )


def validate_encoded(enc: EncodedData, where: str) -> None:
    """Every id inside its field's vocabulary, labels in {0, 1}, pointers inside the event arrays."""
    n = enc.cat.shape[0]
    spec = enc.spec
    if enc.cat.shape != (n, len(spec.categorical)) or len(enc.sequences) != len(spec.sequences):
        raise DataError(
            f"{where}: tensor shapes do not match the feature spec; delete the file to rebuild it"
        )
    if enc.labels.shape != (n, len(spec.tasks)) or enc.group.shape != (n,) or enc.part.shape != (n,):
        raise DataError(
            f"{where}: label/group/split tensors have the wrong shape; delete the file to rebuild it"
        )
    cat = enc.cat.numpy()
    lows, highs = (
        (cat.min(axis=0), cat.max(axis=0)) if n else (np.zeros(cat.shape[1]), np.zeros(cat.shape[1]))
    )
    for j, f in enumerate(spec.categorical):
        lo, hi = int(lows[j]), int(highs[j])
        if lo < 0 or hi >= f.vocab_size:
            raise _range_error(where, f"categorical field '{f.name}'", lo, hi, f.vocab_size)
    for f, s in zip(spec.sequences, enc.sequences):
        if s.max_len != f.max_len:
            raise DataError(f"{where}: sequence '{f.name}' has length {s.max_len}, spec says {f.max_len}")
        t = (s.tokens if isinstance(s, DenseSequence) else s.events).numpy()
        if t.size and (int(t.min()) < 0 or int(t.max()) >= f.vocab_size):
            raise _range_error(where, f"sequence field '{f.name}'", int(t.min()), int(t.max()), f.vocab_size)
        if isinstance(s, HistorySequence) and n:
            e, start, end = s.events.numel(), s.start.numpy(), s.end.numpy()
            if int(start.min()) < 1 or int(end.max()) > e or bool((end < start).any()):
                raise DataError(f"{where}: history '{f.name}' points outside its {e} events; delete the file")
    labels = enc.labels.numpy()
    bad = ~((labels == 0) | (labels == 1))
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(
            f"{where}: label '{spec.tasks[c]}' is {float(labels[r, c])} at row {r}, must be 0 or 1"
        )
    part = enc.part.numpy()
    if n and (int(part.min()) < 0 or int(part.max()) > 2):
        raise DataError(f"{where}: split ids must be 0/1/2")


def encode_dataset(cfg: DataConfig) -> tuple[EncodedData, str]:
    """Encoded tensors of every row, from the cache when possible; returns (data, where it came from)."""
    if cfg.max_rows < 0:
        raise ConfigError(f"data.max_rows must be >= 0, got {cfg.max_rows}")
    fpath = feature_config_path(cfg)
    fcfg = load_feature_config(fpath, cfg.dataset)
    folder = dataset_folder(cfg)
    files = source_files(cfg, fcfg)
    cache_file = None
    if cfg.cache and all(p.is_file() for p in files):  # a missing file is reported by the reader below
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else folder / "processed"
        cache_file = cache_dir / f"{cfg.dataset}-{cache_key(cfg, fcfg, files)}.pt"
        if cache_file.is_file():
            try:
                state = torch.load(cache_file, map_location="cpu", weights_only=True)
                enc = _from_state(state)
            except Exception as exc:  # torch raises several types for a truncated or foreign file
                raise DataError(
                    f"{cache_file}: unreadable cache ({type(exc).__name__}); delete it to rebuild"
                ) from exc
            validate_encoded(enc, str(cache_file))
            return enc, str(cache_file)
    frame = READERS[cfg.dataset](folder, fcfg)
    if cfg.max_rows:
        frame = frame.iloc[: cfg.max_rows]
    enc = encode_frame(frame, fcfg, fpath)
    validate_encoded(enc, f"{cfg.dataset} (freshly encoded)")
    if cache_file is not None:
        atomic_save(_to_state(enc), cache_file)  # unique temp name: concurrent builders cannot collide
    return enc, str(folder)


def split_datasets(enc: EncodedData) -> tuple[RecDataset, RecDataset, RecDataset]:
    full = RecDataset(enc.spec, enc.cat, enc.sequences, enc.labels, enc.group)
    part = enc.part.numpy()
    return tuple(full.subset(np.flatnonzero(part == i)) for i in range(len(SPLITS)))  # type: ignore[return-value]


def field_report(enc: EncodedData) -> list[dict[str, Any]]:
    """Per field, the share of rows (per split) that feed it nothing: id 0 (unknown, rare or missing) for a
    categorical field, an empty sequence for a list or history."""
    part = enc.part.numpy()
    rows: list[tuple[str, str, np.ndarray]] = []
    cat = enc.cat.numpy()
    rows += [(f.name, "unknown", cat[:, j] == 0) for j, f in enumerate(enc.spec.categorical)]
    for f, store in zip(enc.spec.sequences, enc.sequences):
        if isinstance(store, DenseSequence):
            empty = ~store.tokens.numpy().any(axis=1)
        else:
            empty = store.end.numpy() <= store.start.numpy()
        rows.append((f.name, "empty", empty))
    report = []
    for name, what, flags in rows:
        shares = {s: float(flags[part == i].mean()) if (part == i).any() else float("nan") for i, s in enumerate(SPLITS)}
        report.append({"field": name, "what": what, **shares})
    return report


def log_field_report(enc: EncodedData, where: str) -> None:
    """One line per field: the share of unknown ids / empty sequences in train, val and test."""
    log = get_logger("infnet.data", int(os.environ.get("RANK", 0)))
    log.info("%s: %d rows; per field, the share of rows with an unknown id or an empty sequence:", where, len(enc.part))
    for r in field_report(enc):
        log.info("  %-24s %-7s train %5.1f%%  val %5.1f%%  test %5.1f%%", r["field"], r["what"], 100 * r["train"],
                 100 * r["val"], 100 * r["test"])  # fmt: skip


def load_dataset(cfg: DataConfig) -> tuple[FeatureSpec, RecDataset, RecDataset, RecDataset]:
    """(spec, train, val, test) for ``cfg.dataset``, built from the raw files or read from the cache."""
    if cfg.max_train_rows < 0:
        raise ConfigError(f"data.max_train_rows must be >= 0, got {cfg.max_train_rows}")
    enc, where = encode_dataset(cfg)
    log_field_report(enc, where)
    train, val, test = split_datasets(enc)
    if 0 < cfg.max_train_rows < len(train):  # rows are in time order: the most recent ones are the last
        train = train.subset(np.arange(len(train) - cfg.max_train_rows, len(train)))
    return enc.spec, train, val, test


def describe(spec: FeatureSpec, splits: dict[str, RecDataset]) -> list[dict[str, Any]]:
    """Rows, users and positive rate of every task, per split (for the README and prepare's summary)."""
    out = []
    for name, ds in splits.items():
        row: dict[str, Any] = {"split": name, "rows": len(ds), "users": int(ds.group.unique().numel())}
        for t, task in enumerate(spec.tasks):
            row[task] = float(ds.labels[:, t].mean()) if len(ds) else float("nan")
        out.append(row)
    return out
