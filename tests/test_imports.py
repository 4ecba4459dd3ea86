"""The import direction of the package, as docs/architecture.md states it: lower layers never import higher ones."""

import ast
import re
from pathlib import Path

import mutualnet

PACKAGE = Path(mutualnet.__file__).parent
DOC = Path(__file__).parents[1] / "docs" / "architecture.md"


def _imports(path: Path) -> set[str]:
    """Every ``mutualnet.*`` module ``path`` imports, at the top or inside functions, as absolute names."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if path.name == "__init__.py":
        parts = parts[:-1]
    module = ".".join(("mutualnet", *parts))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}  # `from . import cli`
    return {n for n in found if n == "mutualnet" or n.startswith("mutualnet.")}


def _part(path: Path) -> str:
    """The first folder (or module) of ``path`` inside the package: layers, models, train, ..."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _levels() -> dict[str, int]:
    """``part -> level`` from the table in docs/architecture.md."""
    levels = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            levels |= {name: int(m.group(1)) for name in re.findall(r"`([\w.]+)`", m.group(2))}
    return levels


def _violations(allowed) -> list[str]:  # noqa: ANN001
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _part(path)
        for name in sorted(_imports(path)):
            dst = name.split(".")[1] if "." in name else "__init__"
            is_part = (PACKAGE / dst).is_dir() or (PACKAGE / f"{dst}.py").is_file()
            if is_part and dst != src and not allowed(src, dst):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    return bad


def test_the_documented_layers_cover_the_package():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    assert parts == set(_levels()), "docs/architecture.md must place every part of the package in a level"


def test_every_import_goes_down_the_documented_layers():
    levels = _levels()
    assert _violations(lambda src, dst: levels[dst] <= levels[src]) == []


def test_nothing_below_the_cli_imports_the_cli():
    assert _violations(lambda src, dst: dst != "cli" or src in ("cli", "__main__")) == []


def test_building_blocks_import_no_workflow():
    workflows = {"train", "search", "deploy", "detection"}
    assert _violations(lambda src, dst: not (src in ("layers", "models", "data") and dst in workflows)) == []


def test_the_training_loop_is_nobody_s_toolbox():
    """Detection (and anything else) builds a run from the run kit (train/runkit.py), never from the classification
    loop, so the loop can change without moving what other trainers stand on."""
    users = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
             if _part(p) != "train" and any(n.startswith("mutualnet.train.loop") for n in _imports(p))]
    assert users == []
    assert "mutualnet.train.runkit" in _imports(PACKAGE / "detection" / "train.py")


def test_the_check_sees_imports():  # the walker itself: relative, nested and function-level imports are found
    assert "mutualnet.layers.slimmable" in _imports(PACKAGE / "layers" / "__init__.py")
    assert "mutualnet.search.build" in _imports(PACKAGE / "search" / "__init__.py")
    assert "mutualnet.data" in _imports(PACKAGE / "train" / "loop.py")  # `from ..data import ...` in train()
    levels = _levels()
    assert _violations(lambda src, dst: levels[dst] <= levels[src] and dst != "layers") != []
