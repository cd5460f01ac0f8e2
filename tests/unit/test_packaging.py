"""Packaging check (issue 6, item 4): the wheel holds every package and works outside the repo.

How, and why this way:

1. The sources the wheel is built from (``pyproject.toml``, ``README.md`` when present, the five
   top-level packages) are copied to a temporary directory, so the build writes nothing into the
   working tree (no ``build/``, no egg-info churn) and sees no stray files.
2. The wheel is built with pip. Offline (``--no-build-isolation --no-index``) when this
   environment already has the build backend's requirements (``setuptools>=68`` and ``wheel``);
   otherwise isolated, where pip fetches just those two from the package index. The test skips
   only when that fetch is impossible (no index reachable); a build that fails for any other
   reason fails the test.
3. A fresh virtual environment (``python -m venv --without-pip``) gets the wheel with
   ``--no-deps --no-index`` through this environment's pip (``pip --python``). Its dependencies
   come from a ``.pth`` that adds, as a site directory, a symlink copy of this environment's
   site-packages *without* snapmerge's own editable install. So the fresh interpreter finds
   chromadb and the rest without a second multi-hundred-megabyte install, yet can import our
   packages only from the wheel (asserted module by module).
4. Every module the wheel ships is imported by the fresh interpreter, run from a temporary
   directory so the repository is not on ``sys.path``.
5. The ``snapmerge`` console script in the fresh environment's ``bin/`` runs ``--help``.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("snapmerge", "legacy", "flags", "rollout", "handlers", "bench")
DATA_SUFFIXES = (".json", ".html", ".yaml")  # pyproject's package-data globs
NETWORK_MARKERS = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "Failed to establish a new connection",
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    members: frozenset[str]
    source_files: frozenset[str]
    python: Path
    bin_dir: Path
    site_packages: Path
    workdir: Path


def _clean_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(ANONYMIZED_TELEMETRY="False", MPLBACKEND="Agg", PYTHONNOUSERSITE="1")
    return env


def _run(cmd: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run with a scrubbed environment (no PYTHONPATH, no AWS settings), never from the repo."""
    args = [str(c) for c in cmd]
    env = _clean_env()
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _packaged_source_files(base: Path) -> frozenset[str]:
    """The files the wheel must contain: every module and package-data file of our packages."""
    found = set()
    for package in PACKAGES:
        for path in (base / package).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py" or path.suffix in DATA_SUFFIXES:
                found.add(path.relative_to(base).as_posix())
    return frozenset(found)


def _copy_sources(dest: Path) -> None:
    dest.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", dest)
    if (ROOT / "README.md").exists():
        shutil.copy2(ROOT / "README.md", dest)
    for package in PACKAGES:
        skip = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, dest / package, ignore=skip)


def _offline_build_possible() -> bool:
    try:
        setuptools_major = int(metadata.version("setuptools").split(".")[0])
        metadata.version("wheel")
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return setuptools_major >= 68


def _build_wheel(src: Path, out: Path) -> Path:
    cmd: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out]
    if _offline_build_possible():
        cmd += ["--no-build-isolation", "--no-index"]
    result = _run([*cmd, src], cwd=src.parent)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(marker in output for marker in NETWORK_MARKERS):
            pytest.skip("cannot build offline (setuptools>=68 and wheel absent) and no index")
        pytest.fail(f"wheel build failed:\n{output}")
    wheels = sorted(out.glob("snapmerge-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return wheels[0]


def _dependency_site(dest: Path) -> Path:
    """This environment's site-packages as symlinks, minus anything snapmerge installed there."""
    dest.mkdir()
    ours = {p.lower() for p in PACKAGES}
    for site_dir in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site_dir).iterdir():
            name = entry.name.lower()
            if name.split(".")[0].split("-")[0] in ours or "snapmerge" in name:
                continue
            if not (dest / entry.name).exists():
                (dest / entry.name).symlink_to(entry)
    return dest


def _fresh_venv(base: Path, wheel: Path) -> tuple[Path, Path]:
    venv = base / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    site_packages = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base
        ).stdout.strip()
    )
    deps = _dependency_site(base / "deps")
    (site_packages / "zz_snapmerge_test_deps.pth").write_text(
        f"import site; site.addsitedir({str(deps)!r})\n"
    )
    cmd = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    installed = _run([*cmd, "--no-index", wheel], cwd=base)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python, site_packages


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    _copy_sources(base / "src")
    wheel = _build_wheel(base / "src", base / "dist")
    with zipfile.ZipFile(wheel) as archive:
        members = frozenset(archive.namelist())
    python, site_packages = _fresh_venv(base, wheel)
    workdir = base / "work"
    workdir.mkdir()
    return Installed(
        wheel=wheel,
        members=members,
        source_files=_packaged_source_files(base / "src"),
        python=python,
        bin_dir=python.parent,
        site_packages=site_packages,
        workdir=workdir,
    )


def test_wheel_contains_every_package_and_module(installed: Installed) -> None:
    for package in PACKAGES:
        assert f"{package}/__init__.py" in installed.members, f"package {package} not in wheel"
    missing = sorted(installed.source_files - installed.members)
    assert not missing, (
        f"source files missing from the wheel (a directory without __init__.py?): {missing}"
    )


def test_wheel_declares_the_console_script(installed: Installed) -> None:
    entry_points = next(m for m in installed.members if m.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(installed.wheel) as archive:
        text = archive.read(entry_points).decode()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser["console_scripts"]["snapmerge"].strip() == "snapmerge.cli:main"


def test_every_module_imports_from_the_installed_wheel(installed: Installed) -> None:
    modules = sorted(
        m[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for m in installed.members
        if m.endswith(".py") and m.split("/")[0] in PACKAGES and not m.endswith("__main__.py")
    )
    script = (
        "import importlib, json, sys, traceback\n"
        f"site = {str(installed.site_packages)!r}\n"
        "bad = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        module = importlib.import_module(name)\n"
        "        if not (getattr(module, '__file__', '') or '').startswith(site):\n"
        "            bad[name] = f'imported from {module.__file__}, not the wheel'\n"
        "    except BaseException:\n"
        "        bad[name] = traceback.format_exc(limit=3)\n"
        "print(json.dumps(bad))\n"
    )
    result = _run([installed.python, "-c", script, json.dumps(modules)], installed.workdir)
    assert result.returncode == 0, result.stderr
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(PACKAGES) <= set(modules)
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())


def test_console_script_runs_help_in_the_fresh_environment(installed: Installed) -> None:
    assert "snapmerge/cli.py" in installed.members, (
        "snapmerge/cli.py (target of the `snapmerge` console script) is not in the wheel"
    )
    script = installed.bin_dir / "snapmerge"
    assert script.exists(), f"console script not installed at {script}"
    result = _run([script, "--help"], installed.workdir)
    assert result.returncode == 0, f"`snapmerge --help` failed:\n{result.stdout}{result.stderr}"
    assert "usage" in result.stdout.lower()
