"""The CLI loads each command lazily and names the extra a command is missing (issue 14, item 4).

A missing module is simulated in a child interpreter by ``sys.modules[name] = None``, which makes
every ``import name`` raise ModuleNotFoundError exactly as an installation without it does.
Before this change the CLI imported every registrar up front, so one absent extra broke every
command — ``snapmerge gc`` included — with a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from snapmerge.cli import EXTRA_FOR_COMMAND, EXTRA_FOR_MODULE

ROOT = Path(__file__).resolve().parents[2]
IMPORT_NAME = {"pyyaml": "yaml"}  # distribution name → the module the code imports


def _child(
    missing: list[str], argv: list[str], report: str = ""
) -> subprocess.CompletedProcess[str]:
    script = (
        "import json, sys\n"
        f"for name in {missing!r}:\n"
        "    sys.modules[name] = None\n"
        "from snapmerge.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        f"{report}"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _requirement_name(requirement: str) -> str:
    name = requirement.split(";")[0]
    for stop in "[<>=!~ ":
        name = name.split(stop)[0]
    return name.strip().lower()


def test_the_extras_map_is_pyprojects_optional_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = {}
    for extra, requirements in project["optional-dependencies"].items():
        if extra == "dev":
            continue
        for requirement in requirements:
            name = _requirement_name(requirement)
            if name != "snapmerge":  # an extra that pulls another extra
                declared[IMPORT_NAME.get(name, name)] = extra
    assert declared == EXTRA_FOR_MODULE
    base = {_requirement_name(r) for r in project["dependencies"]}
    assert base.isdisjoint(declared), "a base requirement is also listed as an extra"
    assert set(EXTRA_FOR_COMMAND.values()) <= set(project["optional-dependencies"])


@pytest.mark.parametrize(
    ("missing", "argv", "extra"),
    [
        ("scipy", ["rollout", "status"], "rollout"),
        ("yaml", ["dashboard", "--plan", "p.yaml"], "rollout"),
        ("matplotlib", ["report", "--emf", "absent.jsonl"], "report"),
        ("tqdm", ["demo", "--quick"], "local"),
        ("scipy", ["demo", "--quick"], "local"),  # the command's extra, not the module's
        ("moto", ["serve", "--port", "0"], "local"),
        ("scipy", ["bench", "judge"], "local"),  # found missing only when the benchmark runs
    ],
)
def test_a_command_without_its_extra_names_the_extra(
    missing: str, argv: list[str], extra: str
) -> None:
    result = _child([missing], argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"pip install 'snapmerge[{extra}]'" in result.stderr
    assert f"`snapmerge {argv[0]}` needs the [{extra}] extra ({missing} is not installed)" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_core_commands_work_with_every_extra_missing() -> None:
    result = _child(list(EXTRA_FOR_MODULE), ["gc", "--help"])
    assert result.returncode == 0, result.stderr
    assert "--apply" in result.stdout
    # lineage lives in handlers (a repair runs the two-phase path with legacy as its fallback)
    # and needs no extra either
    result = _child(list(EXTRA_FOR_MODULE), ["lineage", "--help"])
    assert result.returncode == 0, result.stderr
    assert "verify" in result.stdout


def test_help_lists_every_command_and_marks_the_unavailable_ones() -> None:
    result = _child(["matplotlib", "tqdm", "moto"], ["--help"])
    assert result.returncode == 0, result.stderr
    for command in ("serve", "gc", "lineage", "rollout", "dashboard", "report", "demo", "bench"):
        assert command in result.stdout
    listing = " ".join(result.stdout.split())
    assert "demo (unavailable: `snapmerge demo` needs the [local] extra" in listing
    assert "rollout drive the staged rollout" in listing  # its extras are all there


def test_only_the_named_command_is_loaded() -> None:
    report = (
        "heavy = ('handlers', 'rollout', 'bench', 'legacy', 'matplotlib', 'scipy', 'tqdm')\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in"
        " heavy})))\n"
    )
    core = _child([], ["gc", "--help"], report)
    assert core.returncode == 0, core.stderr
    assert json.loads(core.stdout.strip().splitlines()[-1]) == []
    lineage = _child([], ["lineage", "--help"], report)
    assert lineage.returncode == 0, lineage.stderr
    assert json.loads(lineage.stdout.strip().splitlines()[-1]) == ["handlers", "legacy"]
    rollout = _child([], ["rollout", "--help"], report)
    assert rollout.returncode == 0, rollout.stderr
    loaded = set(json.loads(rollout.stdout.strip().splitlines()[-1]))
    assert {"handlers", "rollout", "scipy"} <= loaded  # the rollout command and its judge
    assert loaded.isdisjoint({"bench", "matplotlib", "tqdm"})  # demo, report, bench: not asked


def test_a_missing_base_dependency_is_a_bug_not_an_extra() -> None:
    """Negative control: only the extras' modules get the friendly message; a broken base install
    (openfeature is a runtime dependency) still fails loudly."""
    result = _child(["openfeature"], ["rollout", "status"])
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr and "openfeature" in result.stderr
    assert "pip install 'snapmerge[" not in result.stderr


def test_a_command_whose_package_is_absent_says_so() -> None:
    """The Lambda image leaves bench/ out while the wheel's metadata still names its command."""
    result = _child(["bench"], ["bench", "merge"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "`snapmerge bench` is not part of this installation" in result.stderr
    assert "Traceback" not in result.stderr
