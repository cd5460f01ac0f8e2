"""The README's folder map names every module of the packages it maps (issue 14: a newcomer
finds each concern in one named place), and names no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("snapmerge", "snapmerge/adapters", "legacy", "flags", "rollout", "handlers")


def _folder_map() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Folder map") :]
    section = section[: section.index("\n## ", 1)]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z_/]+)/` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`([a-z_0-9]+)`", match.group(2)))
    return rows


def test_every_module_is_in_the_folder_map() -> None:
    rows = _folder_map()
    missing = [
        f"{package}/{path.stem}"
        for package in PACKAGES
        for path in sorted((ROOT / package).glob("*.py"))
        if path.stem != "__init__" and path.stem not in rows.get(package, set())
    ]
    assert missing == []


def test_no_row_names_a_module_that_is_gone() -> None:
    rows = _folder_map()
    for package in PACKAGES:
        modules = {p.stem for p in (ROOT / package).glob("*.py")}
        data = {p.stem for p in (ROOT / package).glob("*.yaml")}
        # a row may also name a file of another kind (default_plan.yaml) or a function (repair)
        gone = {
            name
            for name in rows.get(package, set())
            if "_" in name or name.islower()
            if name not in modules and name not in data and (ROOT / package / name).exists()
        }
        assert gone == set(), package
