"""docs/api.md lists every public name of the user-facing packages, and its examples run."""

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"
PACKAGES = ["mutualnet", "mutualnet.models", "mutualnet.data", "mutualnet.train", "mutualnet.calibrate",
            "mutualnet.search", "mutualnet.profiling", "mutualnet.checkpoint", "mutualnet.deploy",
            "mutualnet.detection", "mutualnet.threads"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package):
    text = API.read_text()
    missing = [n for n in importlib.import_module(package).__all__ if not re.search(rf"`{n}[(`.]", text)]
    assert not missing, f"add {missing} of {package} to docs/api.md"


def test_the_examples_run(capsys):
    for block in re.findall(r"```python\n(.*?)```", API.read_text(), re.S):
        exec(compile(block, str(API), "exec"), {})
    assert capsys.readouterr().out.strip()
