"""The import direction of the package (docs/architecture.md): lower layers never import higher ones."""

import ast
from pathlib import Path

import mutualnet

PACKAGE = Path(mutualnet.__file__).parent


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


def _violations(parts: set[str], forbidden: set[str]) -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _part(path) not in parts:
            continue
        for name in sorted(_imports(path)):
            top = name.split(".")[1] if "." in name else ""
            if top in forbidden:
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    return bad


def test_nothing_below_the_cli_imports_the_cli():
    everything = {_part(p) for p in PACKAGE.rglob("*.py")} - {"cli", "__main__"}
    assert _violations(everything, {"cli"}) == []


def test_building_blocks_import_no_workflow():
    assert _violations({"layers", "models", "data"}, {"train", "search", "deploy", "detection", "calibrate",
                                                      "checkpoint", "demo", "compare"}) == []


def test_the_check_sees_imports():  # the walker itself: a relative import inside a function is found
    assert "mutualnet.layers.slimmable" in _imports(PACKAGE / "layers" / "__init__.py")
    assert "mutualnet.search.build" in _imports(PACKAGE / "search" / "__init__.py")
