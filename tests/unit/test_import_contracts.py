"""The import contracts catch what they claim to (issue 14, item 3): a negative control.

The packages and ``pyproject.toml`` are copied to a temporary directory, modules that break each
ban are added — directly, through a helper module (an indirect import), from a package the old
contracts did not cover (``bench``), from a module the old per-module lists did not name — and
``lint-imports`` must report every one of them. ``make layers`` checks the real tree is clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("snapmerge", "legacy", "flags", "rollout", "handlers", "bench")
LINT_IMPORTS = shutil.which("lint-imports")

VIOLATIONS = {
    # the old boto3 ban listed core modules one by one: a new module was unchecked
    "snapmerge/zz_new_module.py": "import boto3\n",
    "legacy/zz_botocore.py": "from botocore.exceptions import ClientError\n",
    # indirect: the old contracts allowed a chain through a helper
    "snapmerge/zz_helper.py": "import chromadb\n",
    "legacy/zz_indirect.py": "import snapmerge.zz_helper\n",
    # bench was not covered at all
    "bench/zz_openfeature.py": "from openfeature import api\n",
    "handlers/zz_moto.py": "import moto\n",
    # AWS clients from the factory outside an adapter
    "rollout/zz_client.py": "from snapmerge import aws\n",
}

EXPECTED = (
    "snapmerge.zz_new_module -> boto3",
    "legacy.zz_botocore -> botocore",
    "legacy.zz_indirect -> snapmerge.zz_helper",
    "snapmerge.zz_helper -> chromadb",
    "bench.zz_openfeature -> openfeature",
    "handlers.zz_moto -> moto",
    "rollout.zz_client -> snapmerge.aws",
)


@pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter (the [dev] extra) not installed")
def test_every_ban_reports_its_violation(tmp_path: Path) -> None:
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__py*"))
    for path, body in VIOLATIONS.items():
        (tmp_path / path).write_text(body)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = " ".join(result.stdout.split())
    assert result.returncode == 1, result.stdout + result.stderr
    missing = [edge for edge in EXPECTED if edge not in out]
    assert not missing, f"not reported: {missing}\n{result.stdout}"
    assert "Layers: bench -> handlers -> rollout | legacy | flags -> snapmerge KEPT" in out
    assert "Contracts: 1 kept, 5 broken." in out
