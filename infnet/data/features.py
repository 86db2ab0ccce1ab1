"""Declarative feature config (FuxiCTR's ``feature_cols`` spirit) and the vectorised encoder.

A dataset reader (``infnet/data/sources.py``) returns one interaction frame, sorted by time, with a ``_time``
ordering key, an ``_event`` flag (rows that count as past behaviour) and every source column. The YAML in
``infnet/configs/features/<dataset>.yaml`` then says how each model input is made from it:

- ``categorical``: a column -> ids; vocabulary fitted on the train split (values seen >= min_count times),
  everything else (unseen, rare, missing) -> 0.
- ``numeric``: a column -> bucket ids 1..len(edges)+1 (``edges``, or ``quantiles`` fitted on train);
  missing -> 0 when ``allow_missing`` else a DataError.
- ``list``: a multi-valued string column of the row itself ("12,65": the tags of the video, the genres of
  the movie) -> a padded sequence of ids, in the column's order, unknown tokens dropped.
- ``history``: the ``source`` values of the same user's EARLIER events (strictly smaller ``_time``),
  optionally only those where ``filter`` != 0, most recent first, truncated to ``max_len``.
  ``vocab`` names a categorical field whose vocabulary the tokens share (e.g. the item id).

Ids: 0 is padding / unknown / OOV in every field, so ``vocab_size = 1 + number of kept values``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from infnet.data.dataset import DenseSequence, FeatureSpec, FieldSpec, HistorySequence, SequenceStore
from shared.config import load_config
from shared.errors import ConfigError, DataError

FEATURE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "features"
SPLITS = ("train", "val", "test")


@dataclass
class FieldConfig:
    """One model input made from a column of the interaction frame (see the module docstring).

    Attributes:
        name: the input's name (a categorical field or a sequence of the FeatureSpec)
        type: categorical, numeric (bucketized), list (multi-valued string column) or history
        source: column of the interaction frame it is made from
        min_count: values seen fewer times in train map to 0 (categorical / list / history, own vocabulary)
        vocab: list / history: share the vocabulary of this categorical field ("" = its own)
        edges: numeric: bucket edges (bucket i: edges[i-1] <= x < edges[i])
        quantiles: numeric: instead of edges, this many equal-mass buckets fitted on train
        allow_missing: numeric: a missing value becomes id 0 instead of an error
        max_len: list / history: n_a, the padded / truncated length
        filter: history: only earlier rows where this column != 0 ("" = every earlier event)
        separator: list: the token separator of the string column, e.g. "," in "12,65"
    """

    name: str = ""
    type: Literal["categorical", "numeric", "list", "history"] = "categorical"
    source: str = ""
    min_count: int = 1
    vocab: str = ""
    edges: list[float] = field(default_factory=list)
    quantiles: int = 0
    allow_missing: bool = False
    max_len: int = 1
    filter: str = ""
    separator: str = ","


@dataclass
class TaskConfig:
    """One binary task.

    Attributes:
        name: the task's name in metrics and reports (e.g. click)
        source: label column of the interaction frame, values in {0, 1}
    """

    name: str = ""
    source: str = ""


@dataclass
class SplitConfig:
    """How the rows are split into train / val / test (the paper does not give its split).

    Attributes:
        method: time (global time quantiles: rows before the 1 - val - test quantile are train, ...) or
            user_order (each user's rows in time order: the first 1 - val - test of them train, then val, test)
        val_frac: fraction of the rows in the validation split
        test_frac: fraction of the rows in the test split
    """

    method: Literal["time", "user_order"] = "time"
    val_frac: float = 0.1
    test_frac: float = 0.1


@dataclass
class MovieLensConfig:
    """How the MovieLens-100k tasks are built from its ratings (data/infnet/README.md).

    Attributes:
        negatives_per_positive: sampled unrated movies per rating (the "not clicked" rows)
        negative_sampling: uniform, or popularity (p proportional to a movie's number of ratings)
        seed: seed of the negative sampling
        like_min_rating: like = rating >= this
        long_view_min_rating: long_view = rating >= this
        dislike_max_rating: dislike (a history filter) = rating <= this
    """

    negatives_per_positive: int = 1
    negative_sampling: Literal["uniform", "popularity"] = "popularity"
    seed: int = 0
    like_min_rating: int = 4
    long_view_min_rating: int = 5
    dislike_max_rating: int = 2


@dataclass
class KuaiRandConfig:
    """Which KuaiRand-Pure files are read.

    Attributes:
        log_files: the interaction logs, concatenated and sorted by time
        use_statistics: join video_features_statistic_pure.csv (off: it aggregates the whole log period,
            future included, so it would leak the test period into training rows)
    """

    log_files: list[str] = field(
        default_factory=lambda: [
            "log_standard_4_08_to_4_21_pure.csv",
            "log_standard_4_22_to_5_08_pure.csv",
            "log_random_4_22_to_5_08_pure.csv",
        ]
    )
    use_statistics: bool = False


@dataclass
class TableConfig:
    """Your own CSV / parquet files (``data.dataset: table``); paths are relative to the feature config's
    folder. Every id column (the sources of categorical, list and history fields) is read as strings.

    Attributes:
        files: one file per split, {train: ..., val: ..., test: ...} (then split is not used)
        file: or one file of every row, split into train / val / test by the split section
        time_column: column giving each row's time (numbers, or dates pandas can parse); histories see only
            the same user's strictly earlier rows, and split.method time cuts on it ("" = file order)
        format: csv, parquet, or auto (by each file's suffix: .csv / .tsv / .txt or .parquet / .pq)
        delimiter: CSV field delimiter
        na_values: CSV cells read as missing besides the empty cell (e.g. "\\N", "NULL")
    """

    files: dict[str, str] = field(default_factory=dict)
    file: str = ""
    time_column: str = ""
    format: Literal["auto", "csv", "parquet"] = "auto"
    delimiter: str = ","
    na_values: list[str] = field(default_factory=list)


@dataclass
class FeatureConfig:
    """A declarative feature config: infnet/configs/features/<dataset>.yaml.

    Attributes:
        dataset: the data set it describes (must equal data.dataset)
        tasks: the binary tasks, in output order
        group_field: the categorical field whose raw values are the gAUC groups (the user)
        fields: the model inputs, in order (categorical ones first in the FeatureSpec, then sequences)
        split: the train / val / test split
        movielens: MovieLens-100k task construction
        kuairand: KuaiRand-Pure files
    """

    dataset: str = ""
    tasks: list[TaskConfig] = field(default_factory=list)
    group_field: str = "user_id"
    fields: list[FieldConfig] = field(default_factory=list)
    split: SplitConfig = field(default_factory=SplitConfig)
    movielens: MovieLensConfig = field(default_factory=MovieLensConfig)
    kuairand: KuaiRandConfig = field(default_factory=KuaiRandConfig)
    table: TableConfig = field(default_factory=TableConfig)

    def by_type(self, kind: str) -> list[FieldConfig]:
        return [f for f in self.fields if f.type == kind]

    @property
    def categorical_fields(self) -> list[FieldConfig]:
        """The M categorical inputs (categorical and bucketized numeric), in config order."""
        return [f for f in self.fields if f.type in ("categorical", "numeric")]

    @property
    def sequence_fields(self) -> list[FieldConfig]:
        """The F sequence inputs (lists and histories), in config order."""
        return [f for f in self.fields if f.type in ("list", "history")]


def load_feature_config(path: str | Path, dataset: str) -> FeatureConfig:
    """Read and check a feature config (unknown key / wrong type / inconsistent field -> ConfigError)."""
    cfg = load_config(FeatureConfig, path)
    where = f"{path}"
    if cfg.dataset != dataset:
        raise ConfigError(f"{where}: dataset is '{cfg.dataset}' but data.dataset is '{dataset}'")
    if not cfg.tasks:
        raise ConfigError(f"{where}: 'tasks' is empty; list the label columns as {{name, source}}")
    names = [f.name for f in cfg.fields]
    for i, f in enumerate(cfg.fields):
        key = f"{where}: fields[{i}] ({f.name or '?'})"
        if not f.name or not f.source:
            raise ConfigError(f"{key}: 'name' and 'source' are required")
        if names.count(f.name) > 1:
            raise ConfigError(f"{key}: duplicate field name '{f.name}'")
        if f.type == "numeric" and (bool(f.edges) == (f.quantiles > 0)):
            raise ConfigError(f"{key}: a numeric field needs exactly one of 'edges' or 'quantiles'")
        if f.edges and any(b <= a for a, b in zip(f.edges, f.edges[1:])):
            raise ConfigError(f"{key}: 'edges' must be strictly increasing, got {f.edges}")
        if f.type in ("list", "history") and f.max_len < 1:
            raise ConfigError(f"{key}: max_len must be >= 1, got {f.max_len}")
        if f.type in ("categorical", "numeric") and f.max_len != 1:
            raise ConfigError(f"{key}: max_len is only for list/history fields")
        if f.filter and f.type != "history":
            raise ConfigError(f"{key}: 'filter' is only for history fields")
        if f.vocab:
            target = next((g for g in cfg.fields if g.name == f.vocab), None)
            if target is None or target.type != "categorical" or f.type not in ("list", "history"):
                raise ConfigError(
                    f"{key}: vocab '{f.vocab}' must name a categorical field (list/history only)"
                )
        if f.min_count < 1:
            raise ConfigError(f"{key}: min_count must be >= 1")
    group = next((f for f in cfg.fields if f.name == cfg.group_field), None)
    if group is None or group.type != "categorical":
        raise ConfigError(f"{where}: group_field '{cfg.group_field}' must name a categorical field")
    s = cfg.split
    if not (0 < s.val_frac < 1 and 0 < s.test_frac < 1 and s.val_frac + s.test_frac < 1):
        raise ConfigError(f"{where}: split fractions must be in (0, 1) and sum below 1, got {s}")
    return cfg


def assign_split(frame: pd.DataFrame, user: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """Split id per row (0 train, 1 val, 2 test), time-ordered so no split sees a later one's past."""
    t = frame["_time"].to_numpy()
    n = len(t)
    train_frac = 1.0 - cfg.val_frac - cfg.test_frac
    if cfg.method == "time":
        ts = np.sort(t)
        t_val = ts[min(int(n * train_frac), n - 1)]
        t_test = ts[min(int(n * (1.0 - cfg.test_frac)), n - 1)]
        part = np.where(t < t_val, 0, np.where(t < t_test, 1, 2))
    else:
        order = np.lexsort((np.arange(n), t, user))  # by user, then time, then file order
        u_sorted = user[order]
        first = np.r_[0, np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1]
        counts = np.diff(np.r_[first, n])
        rank = np.arange(n) - np.repeat(first, counts)
        frac = (rank + 0.5) / np.repeat(counts, counts)
        part = np.empty(n, dtype=np.int64)
        part[order] = np.where(frac < train_frac, 0, np.where(frac < 1.0 - cfg.test_frac, 1, 2))
    sizes = np.bincount(part, minlength=3)
    if (sizes == 0).any():
        raise DataError(
            f"time split {cfg.method} gives an empty split (train/val/test rows {sizes.tolist()}); "
            "the data has too few rows or too few distinct timestamps"
        )
    return part.astype(np.int64)


def show(value: object) -> str:
    """A cell value for an error message: numpy scalars as plain python, missing as 'missing'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "missing"
    return repr(value.item() if isinstance(value, np.generic) else value)


def _fit_vocab(values: pd.Series, min_count: int) -> pd.Index:
    counts = values.dropna().value_counts()
    kept = counts.index[counts.to_numpy() >= min_count]
    return pd.Index(np.sort(kept.to_numpy()))


_INTEGRAL = re.compile(r"([+-]?\d+)\.0*")


def canonical_id(value: object) -> str:
    """One spelling per id: 12, 12.0, "12", " 12.0 " -> "12" (digits kept as written, e.g. "007")."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    match = _INTEGRAL.fullmatch(text)
    return match.group(1) if match else text


def id_strings(values: pd.Series | np.ndarray | pd.Index) -> pd.Series:
    """Ids as canonical strings (``canonical_id``), missing kept missing; once per distinct value.

    A column pandas parsed as int64 (or float64, when a cell is empty) and one read as text then agree,
    so a history and the categorical field whose vocabulary it shares meet whatever each file's dtype.
    """
    col = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    codes, uniques = pd.factorize(col)  # missing -> -1
    canon = np.array([canonical_id(u) for u in uniques] + [None], dtype=object)
    return pd.Series(canon[codes], index=col.index, dtype=object)


def _is_numeric_kind(arr: np.ndarray | pd.Index) -> bool:
    return arr.dtype.kind in "iufb"


def _encode(vocab: pd.Index, values: pd.Series | np.ndarray) -> np.ndarray:
    """Values -> ids in [0, len(vocab)]; unknown and missing -> 0.

    Integer columns go through a lookup table, others are factorised first so the vocabulary lookup runs
    once per distinct value (both much faster than a hash lookup per row at 1M+ rows). When the values and
    the vocabulary are of different kinds (numbers against text: a history column parsed as ints sharing a
    vocabulary of strings), both sides are compared as canonical id strings instead of never matching.
    """
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if len(vocab) and arr.size and _is_numeric_kind(arr) != _is_numeric_kind(vocab):
        vocab = pd.Index(id_strings(vocab).to_numpy())
        arr = values = id_strings(arr).to_numpy()
    if arr.size and arr.dtype.kind in "iu" and vocab.dtype.kind in "iu":
        lo = min(int(arr.min()), int(vocab.min()) if len(vocab) else 0)
        hi = max(int(arr.max()), int(vocab.max()) if len(vocab) else 0)
        if hi - lo < 50_000_000:
            lut = np.zeros(hi - lo + 1, dtype=np.int64)
            lut[vocab.to_numpy().astype(np.int64) - lo] = np.arange(1, len(vocab) + 1)
            return lut[arr.astype(np.int64) - lo]
    codes, uniques = pd.factorize(values if isinstance(values, pd.Series) else arr)  # missing -> -1
    ids = np.r_[vocab.get_indexer(uniques) + 1, 0].astype(np.int64)
    return ids[codes]  # code -1 picks the trailing 0


def _bucketize(f: FieldConfig, col: pd.Series, train: np.ndarray) -> tuple[np.ndarray, int]:
    x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    missing = np.isnan(x)
    if missing.any() and not f.allow_missing:
        row = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"numeric field '{f.name}': column '{f.source}' is missing or not a number at row {row} "
            f"(value {show(col.iloc[row])}); fix the data or set allow_missing: true in the feature config"
        )
    if f.edges:
        edges = np.asarray(f.edges, dtype=np.float64)
    else:
        fit = x[train & ~missing]
        if fit.size == 0:
            raise DataError(f"numeric field '{f.name}': no train values to fit {f.quantiles} quantiles on")
        edges = np.unique(np.quantile(fit, np.linspace(0, 1, f.quantiles + 1)[1:-1]))
    ids = np.searchsorted(edges, x, side="right") + 1
    ids[missing] = 0
    return ids.astype(np.int64), len(edges) + 2


def _list_tokens(col: pd.Series, separator: str, train: np.ndarray, min_count: int, vocab: pd.Index | None):
    """A string column of token lists ("12,65") -> (row, id) pairs of known tokens in column order, and
    the vocabulary (fitted on the train rows unless given). Tokenises each distinct string once."""
    codes, uniques = pd.factorize(col)  # missing -> code -1 -> no tokens
    # canonical_id: a column of one tag per row that pandas parsed as float (12.0) gives the token "12"
    lists = [[canonical_id(t) for t in canonical_id(u).split(separator) if t.strip()] for u in uniques]
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    flat = pd.Series([t for x in lists for t in x], dtype=object)
    owner = np.repeat(np.arange(len(lists)), lengths)  # distinct string of each flat token
    if vocab is None:
        train_rows = np.bincount(codes[train & (codes >= 0)], minlength=len(lists))
        counts = pd.Series(train_rows[owner]).groupby(flat.to_numpy()).sum()
        vocab = pd.Index(np.sort(counts.index[counts.to_numpy() >= min_count].to_numpy()))
    flat_ids = _encode(vocab, flat.to_numpy())
    row_len = np.where(codes >= 0, lengths[np.maximum(codes, 0)], 0)
    rows = np.repeat(np.arange(codes.size), row_len)
    first = np.r_[0, np.cumsum(lengths)[:-1]][np.maximum(codes, 0)]  # (N,) offset of each row's string
    within = np.arange(rows.size) - np.repeat(np.cumsum(row_len) - row_len, row_len)
    ids = flat_ids[np.repeat(first, row_len) + within]
    keep = ids != 0
    return rows[keep], ids[keep], vocab


def _pack(rows: np.ndarray, tokens: np.ndarray, n: int, max_len: int) -> np.ndarray:
    """Tokens grouped by row (rows non-decreasing) -> (n, max_len) left-aligned, zero-padded."""
    out = np.zeros((n, max_len), dtype=np.int32)
    if rows.size:
        first = np.r_[0, np.flatnonzero(rows[1:] != rows[:-1]) + 1]
        pos = np.arange(rows.size) - np.repeat(first, np.diff(np.r_[first, rows.size]))
        keep = pos < max_len
        out[rows[keep], pos[keep]] = tokens[keep]
    return out


def history_order(user: np.ndarray, time_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (user, time) sort key per row and the stable order of the rows by it (ties keep file order)."""
    key = user.astype(np.int64) * np.int64(user.shape[0] + 1) + time_rank.astype(np.int64)
    return key, np.argsort(key, kind="stable")


def build_history(
    user: np.ndarray,
    time_rank: np.ndarray,
    is_event: np.ndarray,
    tokens: np.ndarray,
    max_len: int,
    order: tuple[np.ndarray, np.ndarray] | None = None,
) -> HistorySequence:
    """Pointers of every row into the (user, time)-sorted events, excluding events at or after its time.

    ``user`` and ``time_rank`` are non-negative ints; events with token 0 (unknown) are left out.
    ``order`` is ``history_order(user, time_rank)``, shared by the history fields of one frame.
    """
    n = user.shape[0]
    key, rows = order if order is not None else history_order(user, time_rank)
    ev = rows[is_event[rows] & (tokens[rows] != 0)]  # events sorted by (user, time, file order)
    ev_key = key[ev]
    # needles in sorted order: the binary searches then walk memory forwards (much faster at 1M+ rows)
    user_key = user[rows].astype(np.int64) * np.int64(n + 1)
    start, end = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    start[rows] = np.searchsorted(ev_key, user_key, side="left")
    end[rows] = np.searchsorted(ev_key, key[rows], side="left")  # strictly earlier time, same user
    events = np.r_[0, tokens[ev]].astype(np.int32)  # events[0] is the sentinel
    return HistorySequence(
        torch.from_numpy(events), torch.from_numpy(start + 1), torch.from_numpy(end + 1), max_len
    )


@dataclass
class EncodedData:
    """Every row encoded; ``part`` says which split each row is in."""

    spec: FeatureSpec
    cat: torch.Tensor  # (N, M) int32
    sequences: list[SequenceStore]  # F
    labels: torch.Tensor  # (N, T) float32
    group: torch.Tensor  # (N,) int64
    part: torch.Tensor  # (N,) int64 in {0, 1, 2}


def check_columns_present(frame: pd.DataFrame, cfg: FeatureConfig, config_path: str | Path) -> None:
    available = sorted(c for c in frame.columns if not c.startswith("_"))
    wanted = [(f"fields '{f.name}' source", f.source) for f in cfg.fields]
    wanted += [(f"fields '{f.name}' filter", f.filter) for f in cfg.fields if f.filter]
    wanted += [(f"tasks '{t.name}' source", t.source) for t in cfg.tasks]
    for what, col in wanted:
        if col not in frame.columns:
            raise ConfigError(
                f"{config_path}: {what} '{col}' is not a column; available: {', '.join(available)}"
            )


def check_binary(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    """Labels and filters must be 0/1 with no missing value; the error names column and row."""
    for col in columns:
        x = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isin(x, (0.0, 1.0)))
        if bad.size:
            r = int(bad[0])
            raise DataError(
                f"{where}: column '{col}' must be 0 or 1, got {show(frame[col].iloc[r])} at row {r} "
                f"({bad.size} bad rows)"
            )


def preset_split(frame: pd.DataFrame) -> np.ndarray:
    """The split the reader gave each row (``_split``: one file per split), checked to be non-empty."""
    part = frame["_split"].to_numpy(dtype=np.int64, copy=True)  # writable: torch.from_numpy shares it
    sizes = np.bincount(part, minlength=3)
    if (sizes == 0).any():
        raise DataError(
            f"a split has no rows (train/val/test rows {sizes.tolist()}): each split file needs rows"
        )
    return part


def _field_error(
    f: FieldConfig, origin: dict[str, str], cfg: FeatureConfig, config_path: str | Path, what: str
) -> DataError:
    """The one-line error of a field that would silently feed the model nothing but padding."""
    where = origin.get(f.source, cfg.dataset)
    fix = {
        "categorical": "check the column's values, lower min_count, or remove the field",
        "numeric": "check the column (numbers expected) or remove the field",
        "list": f"check the column and its separator ({f.separator!r}), or remove the field",
        "history": "check the column, its filter and the user/time columns, or remove the field",
    }[f.type]
    return DataError(f"{where}: column '{f.source}' ({f.type} field '{f.name}' of {config_path or cfg.dataset}): "
                     f"{what}; {fix}")  # fmt: skip


def check_history_tokens(
    f: FieldConfig,
    column: pd.Series,
    mask: np.ndarray,
    tokens: np.ndarray,
    vocab: pd.Index,
    origin: dict[str, str],
    cfg: FeatureConfig,
    config_path: str | Path,
) -> None:
    """A history whose events carry values, none of which is in its vocabulary, is a DataError: its tokens
    never meet the vocabulary (ids spelled differently from the vocabulary's field, another id space...)."""
    present = mask & column.notna().to_numpy()
    if present.any() and not tokens[present].any():
        example = column[present].iloc[0]
        sample = ", ".join(map(show, vocab[:3]))
        raise _field_error(
            f, origin, cfg, config_path,
            f"none of its {int(present.sum())} event values is in the vocabulary "
            f"{'of ' + repr(f.vocab) if f.vocab else 'fitted on train'} (e.g. {show(example)} vs {sample}, ...): "
            "the tokens never meet the vocabulary",
        )  # fmt: skip


def encode_frame(frame: pd.DataFrame, cfg: FeatureConfig, config_path: str | Path = "") -> EncodedData:
    """Encode a time-sorted interaction frame into tensors following ``cfg``.

    ``frame.attrs["origin"]`` (set by the readers) maps a column to the file it came from, for the errors of
    fields that would feed the model nothing but padding (all unknown, all empty, tokens outside the
    vocabulary). Rows with a ``_split`` column keep that split (one file per split).
    """
    check_columns_present(frame, cfg, config_path)
    origin = dict(frame.attrs.get("origin", {}))
    frame = frame.reset_index(drop=True)
    n = len(frame)
    if n == 0:
        raise DataError(f"{cfg.dataset}: no interaction rows")
    group_src = next(f.source for f in cfg.fields if f.name == cfg.group_field)
    if frame[group_src].isna().any():
        r = int(np.flatnonzero(frame[group_src].isna().to_numpy())[0])
        raise DataError(f"{cfg.dataset}: column '{group_src}' (the user id) is missing at row {r}")
    _, user = np.unique(frame[group_src].to_numpy(), return_inverse=True)
    user = user.astype(np.int64).reshape(-1)
    part = preset_split(frame) if "_split" in frame.columns else assign_split(frame, user, cfg.split)
    train = part == 0
    _, time_rank = np.unique(frame["_time"].to_numpy(), return_inverse=True)
    time_rank = time_rank.reshape(-1)
    order = history_order(user, time_rank)
    is_event = frame["_event"].to_numpy(dtype=bool) if "_event" in frame.columns else np.ones(n, dtype=bool)

    vocabs: dict[str, pd.Index] = {}
    cat_cols, cat_specs = [], []
    for f in cfg.categorical_fields:
        if f.type == "categorical":
            vocabs[f.name] = _fit_vocab(frame[f.source][train], f.min_count)
            ids, size = _encode(vocabs[f.name], frame[f.source]), len(vocabs[f.name]) + 1
        else:
            ids, size = _bucketize(f, frame[f.source], train)
        if not ids.any():
            raise _field_error(f, origin, cfg, config_path, "every value is unknown or missing (id 0)")
        cat_cols.append(ids)
        cat_specs.append(FieldSpec(f.name, size, 1))

    seqs: list[SequenceStore] = []
    seq_specs = []
    for f in cfg.sequence_fields:
        if f.type == "list":
            shared = vocabs[f.vocab] if f.vocab else None
            rows, ids, vocab = _list_tokens(frame[f.source], f.separator, train, f.min_count, shared)
            if not ids.size:
                raise _field_error(f, origin, cfg, config_path, "every row's list is empty or unknown")
            seqs.append(DenseSequence(torch.from_numpy(_pack(rows, ids, n, f.max_len))))
        else:
            mask = is_event.copy()
            if f.filter:
                check_binary(
                    frame, [f.filter], f"{origin.get(f.filter, cfg.dataset)} history '{f.name}' filter"
                )
                mask &= frame[f.filter].to_numpy(dtype=np.float64) != 0
            vocab = vocabs[f.vocab] if f.vocab else _fit_vocab(frame[f.source][train & mask], f.min_count)
            tokens = _encode(vocab, frame[f.source])
            check_history_tokens(f, frame[f.source], mask, tokens, vocab, origin, cfg, config_path)
            history = build_history(user, time_rank, mask, tokens, f.max_len, order)
            if not (history.end > history.start).any():
                raise _field_error(
                    f, origin, cfg, config_path,
                    "every row's history is empty (no user has an earlier event"
                    + (f" with {f.filter} != 0" if f.filter else "") + ")",
                )  # fmt: skip
            seqs.append(history)
        seq_specs.append(FieldSpec(f.name, len(vocab) + 1, f.max_len))

    label_cols = [t.source for t in cfg.tasks]
    check_binary(frame, label_cols, f"{cfg.dataset} labels")
    labels = np.array(frame[label_cols], dtype=np.float32)  # a writable copy
    cat = np.empty((n, len(cat_cols)), dtype=np.int32)
    for j, ids in enumerate(cat_cols):
        cat[:, j] = ids
    spec = FeatureSpec(cat_specs, seq_specs, [t.name for t in cfg.tasks], cfg.group_field)
    return EncodedData(
        spec,
        torch.from_numpy(cat),
        seqs,
        torch.from_numpy(labels),
        torch.from_numpy(user),
        torch.from_numpy(part),
    )
