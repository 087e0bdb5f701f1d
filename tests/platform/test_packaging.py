"""The wheel: built from the source tree, installed into a clean virtualenv, every module imports
as ``metarl.*``, nothing called ``envs`` or ``agents`` lands at the top of site-packages, and the
quickstart config ships as package data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Optional extras whose absence is allowed when importing every module.
OPTIONAL = {"ray"}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (so the build leaves the tree untouched)."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    ignore = shutil.ignore_patterns(
        ".git",
        "runs",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        ".venv",
        "venv",
        ".pytest_cache",
        ".ruff_cache",
    )
    shutil.copytree(REPO, src, symlinks=True, ignore=ignore)
    out = root / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(src),
        ],
        cwd=root,
    )
    wheels = list(out.glob("metarl-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_symlinked_packages_ship_as_metarl_subpackages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"metarl", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, (
        top
    )
    for package in ("envs", "agents"):
        source = sorted(
            p.relative_to(REPO).as_posix()
            for p in (REPO / package).rglob("*.py")
            if "__pycache__" not in p.parts
        )
        shipped = sorted(
            n[len("metarl/") :]
            for n in names
            if n.startswith(f"metarl/{package}/") and n.endswith(".py")
        )
        assert shipped == source, f"metarl/{package} in the wheel differs from {package}/"
        assert f"metarl/{package}/__init__.py" in names
    assert "metarl/configs/quickstart.yaml" in names
    assert not any(n.startswith("tests/") or "/tests/" in n for n in names)


def test_wheel_installs_and_imports_in_a_clean_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    # A venv that sees no site-packages but its own; the dependencies come from this
    # interpreter's site-packages through a path entry appended after the venv's own, so the
    # editable install of the source tree (activated by a .pth hook there) stays inactive.
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "zz_metarl_test_deps.pth").write_text("\n".join(deps) + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--no-compile",
            str(wheel),
        ]
    )

    top_level = sorted(p.name for p in purelib.iterdir())
    assert "metarl" in top_level
    assert not [
        n for n in top_level if n in ("envs", "agents") or n.startswith(("envs.", "agents."))
    ], top_level

    script = textwrap.dedent(
        f"""
        import importlib, json, pkgutil, sys
        import metarl
        results = {{"file": metarl.__file__, "failed": {{}}, "skipped": {{}}, "modules": []}}
        def onerror(name):
            results["failed"][name] = repr(sys.exc_info()[1])
        for info in pkgutil.walk_packages(metarl.__path__, "metarl.", onerror=onerror):
            try:
                module = importlib.import_module(info.name)
            except ModuleNotFoundError as err:
                if (err.name or "").split(".")[0] in {sorted(OPTIONAL)!r}:
                    results["skipped"][info.name] = err.name
                    continue
                results["failed"][info.name] = repr(err)
                continue
            except Exception as err:
                results["failed"][info.name] = repr(err)
                continue
            results["modules"].append([info.name, module.__file__])
        for name in ("envs", "agents"):
            try:
                importlib.import_module(name)
                results["failed"][name] = "importable at top level"
            except ModuleNotFoundError:
                pass
        print(json.dumps(results))
        """
    )
    # Run from an empty folder so the source tree is not on sys.path.
    work = tmp_path / "work"
    work.mkdir()
    report = json.loads(_run([str(python), "-c", script], cwd=work).stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert Path(report["file"]).is_relative_to(purelib), report["file"]
    names = {name for name, _ in report["modules"]}
    assert {
        "metarl.cli",
        "metarl.config",
        "metarl.trainer",
        "metarl.checkpoint",
        "metarl.envs.registry",
        "metarl.configs",
    } <= names
    assert any(n.startswith("metarl.agents.") for n in names)
    for name, file in report["modules"]:
        assert Path(file).resolve().is_relative_to(purelib.resolve()), (name, file)

    # The console script works and finds the packaged quickstart.
    metarl = env_dir / "bin" / "metarl"
    assert _run([str(metarl), "--version"], cwd=work).stdout.startswith("metarl ")
    printed = _run([str(metarl), "train", "--print-config"], cwd=work)
    assert "name: quickstart" in printed.stdout
    assert list(work.iterdir()) == []


def _setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("## Set up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [
        line.strip()
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_readme_setup_is_two_commands_and_ci_runs_the_test_one():
    commands = _setup_commands()
    assert commands == ["pip install -e . && metarl train", "pip install -e '.[test]' && pytest"]
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in ci
    assert f"\n{commands[1]} || status=$?\n" in ci  # the README's test command, verbatim
    assert "torch==2.13.0" in ci
