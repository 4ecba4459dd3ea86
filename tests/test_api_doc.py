"""docs/api.md lists every public name of the user-facing packages, names nothing that does not exist, and
its examples run."""

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"
PACKAGES = ["mutualnet", "mutualnet.models", "mutualnet.data", "mutualnet.train", "mutualnet.calibrate",
            "mutualnet.evaluate", "mutualnet.search", "mutualnet.profiling", "mutualnet.checkpoint",
            "mutualnet.deploy", "mutualnet.detection", "mutualnet.segmentation", "mutualnet.threads",
            "mutualnet.compare", "mutualnet.ablation"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package):
    text = API.read_text()
    missing = [n for n in importlib.import_module(package).__all__ if not re.search(rf"`{n}[(`.]", text)]
    assert not missing, f"add {missing} of {package} to docs/api.md"


def _sections() -> list[tuple[list[str], list[str]]]:
    """``(modules, lines)`` of each ``## `module` `` section (a heading may name several modules)."""
    out = []
    for block in re.split(r"^## ", API.read_text(), flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        modules = re.findall(r"`(mutualnet[\w.]*)`", heading)
        if modules:
            out.append((modules, body.splitlines()))
    return out


def _documented_names(lines: list[str]) -> list[str]:
    """The names a section documents: the first cell of its table rows, every backticked name of its prose."""
    names = []
    for line in lines:
        if line.startswith("|"):
            cell = line.split("|")[1]
            if set(cell.strip()) <= {"-", ""} or cell.strip() == "name":
                continue
        elif line.startswith("```"):
            break  # examples are run, not read
        else:
            cell = line
        names += re.findall(r"`([A-Za-z_][\w.]*)[(`]", cell)
    return names


def _resolve(name: str, modules: list[str]) -> bool:
    if name.startswith("mutualnet."):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                return False
            return True
        return False
    for module in modules:
        obj = importlib.import_module(module)
        try:
            for attr in name.split("."):
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        return True
    return False


def test_every_documented_name_exists_once():
    sections = _sections()
    assert sections, "docs/api.md has no `## `mutualnet...`` sections"
    for modules, lines in sections:
        names = _documented_names(lines)
        ghosts = [n for n in names if not _resolve(n, modules)]
        assert not ghosts, f"docs/api.md names {ghosts} under {modules}, which do not exist there"
        rows = [re.findall(r"`([A-Za-z_][\w.]*)[(`]", line.split("|")[1]) for line in lines if line.startswith("|")]
        firsts = [r[0] for r in rows if r]
        twice = sorted({n for n in firsts if firsts.count(n) > 1})
        assert not twice, f"docs/api.md documents {twice} twice under {modules}"


def test_the_examples_run(capsys):
    for block in re.findall(r"```python\n(.*?)```", API.read_text(), re.S):
        exec(compile(block, str(API), "exec"), {})
    assert capsys.readouterr().out.strip()
