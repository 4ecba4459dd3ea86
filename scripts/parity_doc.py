"""Render docs/parity.md from docs/parity.yaml (the one place the paper / original code / ours table lives).

    python scripts/parity_doc.py          # rewrite docs/parity.md
    python scripts/parity_doc.py --check  # exit 1 if docs/parity.md is not what docs/parity.yaml renders

tests/test_parity_recipes.py runs the check and compares every recipe in configs/ with the table's values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA, DOC = ROOT / "docs" / "parity.yaml", ROOT / "docs" / "parity.md"

HEADER = """# Paper parity: the paper, the original code and ours, setting by setting

Generated from `docs/parity.yaml` by `python scripts/parity_doc.py`; `tests/test_parity_recipes.py` checks
that this page is what the YAML renders and that every recipe in `configs/` has the values listed under
"checked" (after `mutualnet train`'s resolution of defaults). **Differs** marks a deliberate difference and
says why; every one of them is a recipe setting you can switch back (`--set key=value`) except where noted.

Sources. Paper: {paper}. Original code: {original}.

What you get by default: the recipes below with antialiased resizing (`data.resize=antialias`) and bf16
autocast. The original's training: add `--set data.resize=official --set run.amp=none`. Released weights
converted with `mutualnet convert --released` are calibrated, searched and served with the original's resize.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _checked(row: dict) -> str:
    if not row.get("check"):
        return f"not a recipe setting: {row['where']}" if row.get("where") else ""
    return ", ".join(f"`{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}`"
                     for k, v in row["check"].items())


def _table(rows: list[dict]) -> list[str]:
    out = ["| setting | paper | original code | ours | checked |", "|---|---|---|---|---|"]
    for r in rows:
        ours = r["ours"] + (f" — **differs:** {r['differs']}" if r.get("differs") else "")
        out.append("| " + " | ".join(_cell(c) for c in (r["setting"], r["paper"], r["original"], ours,
                                                             _checked(r))) + " |")
    return out


def render(data: dict) -> str:
    """The Markdown page for the parsed ``docs/parity.yaml``."""
    lines = [HEADER.format(**data["sources"]).rstrip(), "", "## Every recipe", ""]
    lines += _table(data["common"])
    for rec in data["recipes"]:
        lines += ["", f"## {rec['name']}", "", f"Ours: `{rec['recipe']}`. Original: `{rec['original']}`.", ""]
        lines += _table(rec["settings"])
    return "\n".join(lines) + "\n"


def load() -> dict:
    return yaml.safe_load(DATA.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that docs/parity.md is up to date")
    args = p.parse_args(argv)
    text = render(load())
    if args.check:
        if DOC.read_text() != text:
            print(f"error: {DOC} is out of date; run python scripts/parity_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
