"""The package contract (top-level README, "Layout"): every implemented paper package has the same shape.

A package counts as implemented once it has ``train.py``. For each one:

- the files of the contract are there, and the README has each section of the contract;
- ``train(cfg, run_dir=None, resume=False, device="auto")`` is the training API and ``main`` only parses;
- ``--help`` of train and evaluate exits 0 and names every config key with its meaning, and every config
  dataclass documents each of its fields in its ``Attributes:`` block; prepare / reproduce / bench answer
  ``--help`` too;
- evaluate has the shared flags (``--config --checkpoint --split --out --device``);
- no module imports another paper package, and the modules of a package import each other without a cycle
  (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import typing
from pathlib import Path

import pytest

from shared.cli import config_keys, field_docs

REPO = Path(__file__).resolve().parents[1]
PAPERS = ("gem", "infnet", "rcar", "retrofpn")
IMPLEMENTED = [p for p in PAPERS if (REPO / p / "train.py").is_file()]
FILES = ("README.md", "config.py", "model.py", "reference.py", "train.py", "evaluate.py", "prepare.py",
         "reproduce.py", "bench.py")  # fmt: skip
README_SECTIONS = ("folder map", "the model in one screen", "deviations", "data", "running", "reproduction",
                   "benchmark", "tests", "citation")  # fmt: skip
COMMANDS = ("train", "evaluate", "prepare", "reproduce", "bench")


def _config_class(paper: str) -> type:
    module = importlib.import_module(f"{paper}.config")
    classes = [
        obj
        for name, obj in vars(module).items()
        if dataclasses.is_dataclass(obj) and name.lower() == f"{paper}config"
    ]
    assert len(classes) == 1, (
        f"{paper}/config.py must define one top-level config class {paper.upper()}Config"
    )
    return classes[0]


def _help(paper: str, command: str) -> str:
    main = importlib.import_module(f"{paper}.{command}").main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0, f"{paper}.{command} --help exited {exit_info.value.code}"
    return out.getvalue()


def test_at_least_the_two_built_packages_are_checked():
    assert {"infnet", "rcar"} <= set(IMPLEMENTED)


@pytest.mark.parametrize("paper", IMPLEMENTED)
def test_files_and_readme_sections(paper):
    root = REPO / paper
    missing = [f for f in FILES if not (root / f).is_file()]
    assert not missing, f"{paper}/ lacks {missing}"
    assert list((root / "configs").glob("*.yaml")), f"{paper}/configs/ has no YAML config"
    assert (root / "data" / "__init__.py").is_file(), (
        f"{paper}/data/ must be a package (loaders, embedded data)"
    )
    headings = [ln.lstrip("#").strip().lower() for ln in (root / "README.md").read_text().splitlines()
                if ln.startswith("#")]  # fmt: skip
    for section in README_SECTIONS:
        assert any(h.startswith(section) for h in headings), f"{paper}/README.md has no '{section}' section"


@pytest.mark.parametrize("paper", IMPLEMENTED)
def test_train_signature(paper):
    train = importlib.import_module(f"{paper}.train").train
    params = inspect.signature(train).parameters
    assert list(params) == ["cfg", "run_dir", "resume", "device"], list(params)
    defaults = {name: p.default for name, p in params.items()}
    assert (defaults["run_dir"], defaults["resume"], defaults["device"]) == (None, False, "auto")
    assert params["run_dir"].kind == params["run_dir"].POSITIONAL_OR_KEYWORD


def _all_dataclasses(cls: type) -> list[type]:
    found, todo = [], [cls]
    while todo:
        current = todo.pop()
        found.append(current)
        for tp in typing.get_type_hints(current).values():
            if dataclasses.is_dataclass(tp) and tp not in found:
                todo.append(tp)
    return found


@pytest.mark.parametrize("paper", IMPLEMENTED)
def test_every_config_field_is_documented(paper):
    for cls in _all_dataclasses(_config_class(paper)):
        docs = field_docs(cls)
        undocumented = [f.name for f in dataclasses.fields(cls) if f.init and not docs.get(f.name)]
        assert not undocumented, f"{cls.__module__}.{cls.__name__}: no Attributes: line for {undocumented}"


@pytest.mark.parametrize("paper", IMPLEMENTED)
def test_help_of_train_and_evaluate_names_every_key(paper):
    keys = config_keys(_config_class(paper))
    for command in ("train", "evaluate"):
        text = _help(paper, command)
        missing = [key for key, *_ in keys if f"  {key} (" not in text]
        assert not missing, f"{paper}.{command} --help does not list {missing[:5]}"
        if command == "evaluate":
            for flag in ("--config", "--checkpoint", "--split", "--out", "--device"):
                assert flag in text, f"{paper}.evaluate has no {flag}"
    for command in ("prepare", "reproduce", "bench"):
        _help(paper, command)


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by a file, skipping ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _module_name(paper: str, path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@pytest.mark.parametrize("paper", [p for p in PAPERS if (REPO / p).is_dir()])
def test_no_import_of_another_paper_and_no_cycle(paper):
    files = sorted((REPO / paper).rglob("*.py"))
    modules = {_module_name(paper, f): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for imported in _imports(path):
            top = imported.split(".")[0]
            assert top not in set(PAPERS) - {paper}, f"{path.relative_to(REPO)} imports {imported}"
            if imported in modules and imported != name:
                graph[name].add(imported)
    # an import of a package runs its __init__, so a module importing `paper.data` depends on it
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
                pytest.fail(f"import cycle in {paper}: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
