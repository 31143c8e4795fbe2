"""Tooling ships apart from the library: volttron-dr-common is dr_common only, volttron-dr-tools holds dr_ops and
dr_tools; scripts and benchmarks are entry points that edit no sys.path and never import from tests/."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def top_level(project: Path, out: Path) -> set[str]:
    """The top-level packages setuptools puts in `project`'s distribution (its egg_info, as an editable install
    and a wheel build compute them)."""
    out.mkdir()
    run = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info",
                          "--egg-base", str(out)], cwd=project, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    (info,) = out.glob("*.egg-info")
    return set((info / "top_level.txt").read_text().split())


def assemble(tmp_path: Path, name: str, files: dict[str, Path], packages: list[str]) -> Path:
    """The project folder as scripts/bootstrap stages it."""
    root = tmp_path / name
    (root / "src").mkdir(parents=True)
    for target, source in files.items():
        shutil.copy(source, root / target)
    for package in packages:
        shutil.copytree(REPO / "src" / package, root / "src" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_common_distribution_is_dr_common_only(tmp_path):
    # given every package of src/ (as the staging area held it before), setup.cfg still picks dr_common only
    everything = sorted(p.name for p in (REPO / "src").iterdir() if (p / "__init__.py").is_file())
    assert {"dr_common", "dr_ops", "dr_tools"} <= set(everything)
    project = assemble(tmp_path, "common", {"setup.cfg": REPO / "setup.cfg", "pyproject.toml": REPO / "pyproject.toml",
                                            "README.md": REPO / "README.md"}, everything)
    assert top_level(project, tmp_path / "w1") == {"dr_common"}


def test_tools_distribution_is_dr_ops_and_dr_tools(tmp_path):
    project = assemble(tmp_path, "tools", {"pyproject.toml": REPO / "tools" / "pyproject.toml"},
                       ["dr_ops", "dr_tools"])
    assert top_level(project, tmp_path / "w2") == {"dr_ops", "dr_tools"}


def entry_points() -> list[Path]:
    return sorted([*(REPO / "scripts").glob("*.py"), *(REPO / "bench").glob("*.py")])


@pytest.mark.parametrize("path", entry_points(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_entry_points_edit_no_sys_path_and_import_nothing_from_tests(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name) \
                and node.value.id == "sys":
            pytest.fail(f"{path.name}:{node.lineno} uses sys.path")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("tests", "fleet"):
            pytest.fail(f"{path.name}:{node.lineno} imports from {node.module}")
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("tests", "fleet") for a in node.names):
            pytest.fail(f"{path.name}:{node.lineno} imports tests/ or the old scripts/fleet")


def test_agents_import_no_tooling():
    """No agent, driver or the status page imports dr_ops or dr_tools (they are not in what agents install)."""
    offenders = []
    for folder in [*(REPO / "agents").iterdir(), REPO / "web", REPO / "drivers", REPO / "src" / "dr_common"]:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if any(n.split(".")[0] in ("dr_ops", "dr_tools") for n in names):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
