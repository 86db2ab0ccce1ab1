"""Readers of the raw files, exactly as their publishers ship them, into one time-sorted interaction frame.

Each reader checks the files (present, readable, the published columns, ids and labels well formed), joins the
user and item side tables onto the interactions and returns a frame with
``_time`` (int64 ordering key; rows at equal ``_time`` never see each other in their histories),
``_event`` (bool: the row is a real interaction that later rows may see in their histories) and every
source column the feature config may use. Errors name the file, the column and the row, and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from infnet.data.features import SPLITS, FeatureConfig, check_binary, id_strings, show
from shared.errors import ConfigError, DataError

# --- published schemas -----------------------------------------------------------------------------------
MOVIELENS_FILES = {
    "data": "MovieLens100k_data.parquet.brotli",
    "users": "MovieLens100k_users.parquet.brotli",
    "items": "MovieLens100k_items.parquet.brotli",
}
MOVIELENS_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
MOVIELENS_COLUMNS = {
    "data": ["user_id", "movie_id", "rating", "timestamp"],
    "users": ["user_id", "age", "gender", "occupation", "zip_code"],
    "items": ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *MOVIELENS_GENRES],
}

KUAIRAND_LOG_COLUMNS = [
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow", "is_comment",
    "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms", "profile_stay_time",
    "comment_stay_time", "is_profile_enter", "is_rand", "tab",
]  # fmt: skip
KUAIRAND_USER_COLUMNS = [
    "user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num", "follow_user_num_range", "fans_user_num", "fans_user_num_range", "friend_user_num",
    "friend_user_num_range", "register_days", "register_days_range", *[f"onehot_feat{i}" for i in range(18)],
]  # fmt: skip
KUAIRAND_VIDEO_COLUMNS = [
    "video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status", "video_duration",
    "server_width", "server_height", "music_id", "music_type", "tag",
]  # fmt: skip
KUAIRAND_USER_FILE = "user_features_pure.csv"
KUAIRAND_VIDEO_FILE = "video_features_basic_pure.csv"
KUAIRAND_STAT_FILE = "video_features_statistic_pure.csv"
KUAIRAND_HELP = (
    "download KuaiRand-Pure (https://kuairand.com, github.com/chongminggao/KuaiRand) and put the CSV files of "
    "KuaiRand-Pure/data/ in {folder} (see data/infnet/README.md)"
)

TENREC_FILE = "QB-video.csv"
TENREC_COLUMNS = [
    "user_id", "item_id", "click", "follow", "like", "share", "video_category", "watching_times", "gender", "age",
]  # fmt: skip
TENREC_HELP = (
    "download QB-video.csv of Tenrec (github.com/yuangh-x/2022-NIPS-Tenrec, CC BY-NC 4.0) and put it in "
    "{folder} (see data/infnet/README.md)"
)


# --- checked file readers ----------------------------------------------------------------------------------
def _require_file(path: Path, help_text: str) -> None:
    if not path.parent.is_dir():
        raise DataError(f"data folder {path.parent} does not exist: {help_text}")
    if not path.is_file():
        raise DataError(f"missing file {path}: {help_text}")


def _check_header(path: Path, found: list[str], expected: list[str], exact: bool = True) -> None:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected] if exact else []
    if missing or extra:
        raise DataError(
            f"{path}: unexpected columns (missing: {missing or 'none'}; extra: {extra or 'none'}). "
            f"Expected the published columns: {', '.join(expected)}"
        )


def read_csv_checked(
    path: Path,
    expected: list[str],
    help_text: str,
    exact: bool = True,
    na_values: list[str] | None = None,
    dtype: dict[str, type] | None = None,
) -> pd.DataFrame:
    """Read a CSV after checking that it exists and has the published header; parse errors -> DataError."""
    _require_file(path, help_text)
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the CSV header ({exc}); the file is empty or corrupt") from exc
    _check_header(path, header, expected, exact)
    try:
        frame = pd.read_csv(path, na_values=na_values, low_memory=False, dtype=dtype)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise DataError(f"{path}: corrupt or truncated CSV ({msg}); download the file again") from exc
    return frame


def read_parquet_checked(path: Path, expected: list[str], help_text: str) -> pd.DataFrame:
    _require_file(path, help_text)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        msg = " ".join(str(exc).split())
        raise DataError(
            f"{path}: corrupt or truncated parquet ({type(exc).__name__}: {msg}); {help_text}"
        ) from exc
    _check_header(path, frame.columns.tolist(), expected)
    return frame


def check_numeric(frame: pd.DataFrame, columns: list[str], path: Path, allow_missing: bool = False) -> None:
    """Columns must be numbers (and present unless ``allow_missing``); names column, row and file line."""
    for col in columns:
        if pd.api.types.is_integer_dtype(frame[col].dtype):
            continue  # parsed as ints: no missing value, nothing else to check
        raw = frame[col]
        x = pd.to_numeric(raw, errors="coerce")
        bad = x.isna() & raw.notna() if allow_missing else x.isna()
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column '{col}' is missing or not a number at data row {r} (line {r + 2}): "
                f"{show(raw.iloc[r])} ({int(bad.sum())} bad rows)"
            )


def with_origin(frame: pd.DataFrame, sources: dict[str, list[str]]) -> pd.DataFrame:
    """Record which file each column came from (``frame.attrs["origin"]``, read by the encoder's errors)."""
    origin = {}
    for where, columns in sources.items():
        for col in columns:
            origin.setdefault(col, where)
    frame.attrs["origin"] = origin
    return frame


def check_binary_file(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    try:
        check_binary(frame, columns, str(path))
    except DataError as exc:
        raise DataError(f"{exc} (data rows count from 0 after the header line)") from None


# --- MovieLens-100k (embedded default) ---------------------------------------------------------------------
def read_movielens(folder: Path, cfg: FeatureConfig) -> pd.DataFrame:
    """Ratings as clicks, plus sampled unrated movies as non-clicks (see data/infnet/README.md)."""
    help_text = f"run `make data-infnet` (python -m infnet.prepare) to extract it into {folder}"
    files = {k: folder / v for k, v in MOVIELENS_FILES.items()}
    ratings = read_parquet_checked(files["data"], MOVIELENS_COLUMNS["data"], help_text)
    users = read_parquet_checked(files["users"], MOVIELENS_COLUMNS["users"], help_text)
    items = read_parquet_checked(files["items"], MOVIELENS_COLUMNS["items"], help_text)
    check_numeric(ratings, MOVIELENS_COLUMNS["data"], files["data"])
    check_numeric(users, ["user_id", "age"], files["users"])
    check_numeric(items, ["movie_id"], files["items"])
    check_binary_file(items, MOVIELENS_GENRES, files["items"])
    bad = np.flatnonzero(~ratings["rating"].isin([1, 2, 3, 4, 5]).to_numpy())
    if bad.size:
        r = int(bad[0])
        raise DataError(
            f"{files['data']}: column 'rating' must be 1..5, got {show(ratings['rating'].iloc[r])} at row {r}"
        )
    for name, frame, key in (("users", users, "user_id"), ("items", items, "movie_id")):
        dup = frame[key].duplicated().to_numpy()
        if dup.any():
            r = int(np.flatnonzero(dup)[0])
            raise DataError(f"{files[name]}: duplicate {key} {show(frame[key].iloc[r])} at row {r}")

    m = cfg.movielens
    pos = ratings.astype(
        {"user_id": np.int64, "movie_id": np.int64, "rating": np.int64, "timestamp": np.int64}
    )
    pos = pos.assign(
        click=1,
        like=(pos["rating"] >= m.like_min_rating).astype(np.int64),
        long_view=(pos["rating"] >= m.long_view_min_rating).astype(np.int64),
        dislike=(pos["rating"] <= m.dislike_max_rating).astype(np.int64),
        _event=True,
    )
    neg = sample_negatives(pos, m.negatives_per_positive, m.negative_sampling, m.seed)
    rows = pd.concat([pos, neg], ignore_index=True)
    rows["_time"] = rows["timestamp"].astype(np.int64)
    rows = rows.sort_values("_time", kind="stable", ignore_index=True)  # a rating precedes its negatives

    users = users.assign(zip_prefix=users["zip_code"].astype(str).str[:2])
    flags = items[MOVIELENS_GENRES].to_numpy(dtype=bool)
    genre_lists = [[g for g, on in zip(MOVIELENS_GENRES, row) if on] for row in flags]  # 1,682 movies
    year = pd.to_numeric(items["release_date"].astype(str).str[-4:], errors="coerce")
    items = pd.DataFrame(
        {
            "movie_id": items["movie_id"],
            "release_year": year,
            "genres": ["|".join(g) for g in genre_lists],  # a list field with separator "|"
            "first_genre": [g[0] if g else None for g in genre_lists],
        }
    )
    rows = rows.merge(users, on="user_id", how="left").merge(items, on="movie_id", how="left")
    return with_origin(rows, {
        str(files["data"]): [*MOVIELENS_COLUMNS["data"], "click", "like", "long_view", "dislike"],
        str(files["users"]): [*users.columns],
        str(files["items"]): [*items.columns],
    })  # fmt: skip


def sample_negatives(pos: pd.DataFrame, per_positive: int, sampling: str, seed: int) -> pd.DataFrame:
    """``per_positive`` movies per rating that the user never rated, at the rating's timestamp.

    ``popularity`` samples a movie with probability proportional to its number of ratings, so a movie is
    about as often a negative as a positive and the item id alone does not give the click label away.
    """
    if per_positive == 0:
        return pos.iloc[:0].assign(_event=False)
    rng = np.random.default_rng(seed)
    movies, movie_idx, counts = np.unique(pos["movie_id"].to_numpy(), return_inverse=True, return_counts=True)
    users, user_idx = np.unique(pos["user_id"].to_numpy(), return_inverse=True)
    rated = np.zeros((users.size, movies.size), dtype=bool)  # 943 x 1,682 for MovieLens-100k
    rated[user_idx, movie_idx] = True
    p = counts / counts.sum() if sampling == "popularity" else None
    u = np.repeat(user_idx, per_positive)
    item = rng.choice(movies.size, size=u.size, p=p)
    clash = np.flatnonzero(rated[u, item])
    for _ in range(100):  # resample the collisions with rated movies (vectorised rejection sampling)
        if clash.size == 0:
            break
        item[clash] = rng.choice(movies.size, size=clash.size, p=p)
        clash = clash[rated[u[clash], item[clash]]]
    ok = ~rated[u, item]  # a user who rated nearly everything keeps fewer negatives
    user, item = users[u], movies[item]
    ts = np.repeat(pos["timestamp"].to_numpy(), per_positive)
    return pd.DataFrame(
        {
            "user_id": user[ok],
            "movie_id": item[ok],
            "timestamp": ts[ok],
            "click": 0,
            "like": 0,
            "long_view": 0,
            "dislike": 0,
            "_event": False,
        }
    )


# --- KuaiRand-Pure -----------------------------------------------------------------------------------------
def kuairand_folder(folder: Path) -> Path:
    """The CSVs directly in ``folder``, or in the archive's own ``KuaiRand-Pure/data/`` below it."""
    nested = folder / "KuaiRand-Pure" / "data"
    return nested if nested.is_dir() and not (folder / KUAIRAND_USER_FILE).exists() else folder


def read_kuairand(folder: Path, cfg: FeatureConfig) -> pd.DataFrame:
    folder = kuairand_folder(folder)
    help_text = KUAIRAND_HELP.format(folder=folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist: {help_text}")
    missing = [
        f
        for f in [*cfg.kuairand.log_files, KUAIRAND_USER_FILE, KUAIRAND_VIDEO_FILE]
        if not (folder / f).is_file()
    ]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}: {help_text}")
    wanted = {t.source for t in cfg.tasks} | {f.filter for f in cfg.fields if f.filter}
    label_cols = sorted(wanted & set(KUAIRAND_LOG_COLUMNS))
    logs = []
    for name in cfg.kuairand.log_files:
        path = folder / name
        log = read_csv_checked(path, KUAIRAND_LOG_COLUMNS, help_text)
        check_numeric(log, KUAIRAND_LOG_COLUMNS, path)
        check_binary_file(log, [c for c in label_cols if c in log.columns], path)
        logs.append(log.astype(np.int64))
    rows = pd.concat(logs, ignore_index=True)
    rows["_time"] = rows["time_ms"]
    rows["_event"] = True
    rows["hour"] = rows["hourmin"] // 100
    rows = rows.sort_values("_time", kind="stable", ignore_index=True)

    users = read_csv_checked(folder / KUAIRAND_USER_FILE, KUAIRAND_USER_COLUMNS, help_text)
    check_numeric(users, ["user_id"], folder / KUAIRAND_USER_FILE)
    # tag as text: with one tag per video and some empty cells pandas would parse "12" as the float 12.0
    videos = read_csv_checked(
        folder / KUAIRAND_VIDEO_FILE, KUAIRAND_VIDEO_COLUMNS, help_text, dtype={"tag": str}
    )
    check_numeric(videos, ["video_id"], folder / KUAIRAND_VIDEO_FILE)
    check_numeric(videos, ["video_duration"], folder / KUAIRAND_VIDEO_FILE, allow_missing=True)
    first_tag = videos["tag"].map(lambda v: v.split(",")[0].strip() or None if isinstance(v, str) else None)
    videos = videos.assign(first_tag=first_tag)  # "tag" itself is the list field
    rows = rows.merge(users, on="user_id", how="left").merge(videos, on="video_id", how="left")
    origin = {" + ".join(str(folder / f) for f in cfg.kuairand.log_files): [*KUAIRAND_LOG_COLUMNS, "hour"],
              str(folder / KUAIRAND_USER_FILE): KUAIRAND_USER_COLUMNS,
              str(folder / KUAIRAND_VIDEO_FILE): [*KUAIRAND_VIDEO_COLUMNS, "first_tag"]}  # fmt: skip
    if cfg.kuairand.use_statistics:
        path = folder / KUAIRAND_STAT_FILE
        stats = read_csv_checked(path, ["video_id", "counts"], help_text, exact=False)
        check_numeric(stats, stats.columns.tolist(), path, allow_missing=True)
        rows = rows.merge(stats, on="video_id", how="left")
        origin[str(path)] = stats.columns.tolist()
    return with_origin(rows, origin)


# --- Tenrec QB-video ---------------------------------------------------------------------------------------
def read_tenrec(folder: Path, cfg: FeatureConfig) -> pd.DataFrame:
    """QB-video.csv has no timestamp: each user's rows are taken to be in time order in the file."""
    path = folder / TENREC_FILE
    help_text = TENREC_HELP.format(folder=folder)
    rows = read_csv_checked(path, TENREC_COLUMNS, help_text, na_values=["\\N"])
    check_numeric(rows, ["user_id", "item_id"], path)
    check_numeric(rows, ["video_category", "watching_times", "gender", "age"], path, allow_missing=True)
    check_binary_file(rows, [c for c in ("click", "follow", "like", "share") if c in rows.columns], path)
    rows["_time"] = np.arange(len(rows), dtype=np.int64)  # file order; unique, so no ties
    rows["_event"] = True
    return with_origin(rows, {str(path): TENREC_COLUMNS})


# --- your own CSV / parquet files (data.dataset: table) ------------------------------------------------------
TABLE_HELP = "see 'Bring your own data' in infnet/README.md"
CSV_SUFFIXES, PARQUET_SUFFIXES = (".csv", ".tsv", ".txt"), (".parquet", ".pq")


def table_files(folder: Path, cfg: FeatureConfig) -> dict[str, Path]:
    """``{split or "all": path}`` of the ``table`` section, relative paths taken from ``folder``."""
    t = cfg.table
    if bool(t.files) == bool(t.file):
        raise ConfigError(
            "table: give exactly one of 'files' ({train: ..., val: ..., test: ...}, one file per split) or "
            f"'file' (one file, split by the split section); got files={t.files or '{}'} file={t.file!r}"
        )
    if t.files and sorted(t.files) != sorted(SPLITS):
        raise ConfigError(f"table.files needs exactly the keys {', '.join(SPLITS)}; got {', '.join(t.files)}")
    named = {k: t.files[k] for k in SPLITS} if t.files else {"all": t.file}
    return {k: Path(v) if Path(v).is_absolute() else folder / v for k, v in named.items()}


def table_columns(cfg: FeatureConfig) -> tuple[list[str], list[str], list[str]]:
    """(id columns read as canonical strings, 0/1 columns, every column the feature config reads)."""
    ids = [f.source for f in cfg.fields if f.type in ("categorical", "list", "history")]
    binary = [t.source for t in cfg.tasks] + [f.filter for f in cfg.fields if f.filter]
    numeric = [f.source for f in cfg.fields if f.type == "numeric"]
    wanted = ids + binary + numeric + ([cfg.table.time_column] if cfg.table.time_column else [])
    return list(dict.fromkeys(ids)), list(dict.fromkeys(binary)), list(dict.fromkeys(wanted))


def _read_table_file(path: Path, cfg: FeatureConfig, wanted: list[str]) -> pd.DataFrame:
    t = cfg.table
    _require_file(path, TABLE_HELP)
    kind = t.format
    if kind == "auto":
        suffix = path.suffix.lower()
        kind = "csv" if suffix in CSV_SUFFIXES else "parquet" if suffix in PARQUET_SUFFIXES else ""
        if not kind:
            raise ConfigError(f"{path}: cannot tell the format from the suffix '{suffix}'; set table.format")
    try:
        if kind == "csv":
            header = pd.read_csv(path, sep=t.delimiter, nrows=0).columns.tolist()
        else:
            header = pq.ParquetFile(path).schema_arrow.names
    except Exception as exc:  # pandas / pyarrow raise several types for an empty or damaged file
        raise DataError(f"{path}: cannot read the {kind} header ({' '.join(str(exc).split())})") from exc
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(
            f"{path}: the feature config reads column(s) {', '.join(missing)}, which the file does not have; "
            f"its columns: {', '.join(map(str, header))}"
        )
    try:
        if kind == "csv":
            # every column as text: ids keep their spelling ("007"), numbers are parsed below where needed
            return pd.read_csv(path, sep=t.delimiter, usecols=wanted, dtype=str, na_values=t.na_values)
        return pd.read_parquet(path, columns=wanted)
    except Exception as exc:
        raise DataError(f"{path}: corrupt or truncated {kind} file ({' '.join(str(exc).split())})") from exc


def _time_values(col: pd.Series, path: Path, name: str) -> tuple[str, np.ndarray]:
    """("number", float64) or ("date", int64 nanoseconds) of a time column; a bad cell names its row."""
    numbers = pd.to_numeric(col, errors="coerce")
    if numbers.notna().all():
        return "number", numbers.to_numpy(dtype=np.float64)
    # numbers with a few bad cells: the first bad one is the error; no number at all: dates
    dates = numbers if numbers.notna().any() else pd.to_datetime(col, errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: time column '{name}' is missing or neither a number nor a date at data row {r} "
            f"(line {r + 2}): {show(col.iloc[r])}"
        )
    return "date", dates.to_numpy().astype("datetime64[ns]").astype(np.int64)


def read_table(folder: Path, cfg: FeatureConfig) -> pd.DataFrame:
    """Your own interactions: one CSV / parquet per split, or one split by the split section.

    Every row is an impression; every row is also an event later rows of its user may see in a history
    (narrow that with a history's ``filter``). Id columns become canonical strings (``id_strings``), so
    12, 12.0 and "12" are one id across files and fields; labels and filters must be 0/1.
    """
    ids, binary, wanted = table_columns(cfg)
    t = cfg.table
    frames, origin, kinds = [], {}, set()
    for split, path in table_files(folder, cfg).items():
        frame = _read_table_file(path, cfg, wanted)
        if frame.empty:
            raise DataError(f"{path}: no data rows; {TABLE_HELP}")
        check_binary_file(frame, binary, path)  # on the cells as written, so a bad one is shown as it is
        for col in binary:  # CSV cells are text (pandas' "str" or object dtype)
            if not pd.api.types.is_numeric_dtype(frame[col]):
                frame[col] = pd.to_numeric(frame[col])
        for col in ids:
            frame[col] = id_strings(frame[col])
        if t.time_column:
            kind, frame["_time_raw"] = _time_values(frame[t.time_column], path, t.time_column)
            kinds.add(kind)
        if split != "all":
            frame["_split"] = SPLITS.index(split)
        frames.append(frame)
        for col in wanted:
            origin[col] = origin[col] + " / " + str(path) if col in origin else str(path)
    rows = pd.concat(frames, ignore_index=True)
    if len(kinds) > 1:
        raise DataError(
            f"time column '{t.time_column}' holds numbers in some files and dates in others: {origin}"
        )
    if t.time_column:  # the order is all that counts: dense ranks (ties stay ties) as the int64 key
        rows["_time"] = np.unique(rows.pop("_time_raw").to_numpy(), return_inverse=True)[1].astype(np.int64)
    else:
        rows["_time"] = np.arange(len(rows), dtype=np.int64)  # file order (train, val, test files in turn)
    rows["_event"] = True
    rows = rows.sort_values("_time", kind="stable", ignore_index=True)
    rows.attrs["origin"] = origin
    return rows


READERS = {
    "movielens100k": read_movielens,
    "kuairand_pure": read_kuairand,
    "tenrec_qb": read_tenrec,
    "table": read_table,
}
