"""The code's shape: no module over 500 lines and no class over 400 in the product's packages, one ConfigError,
every RPC exported under a name constant, no agent importing another agent."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = [REPO / "agents", REPO / "web", REPO / "src", REPO / "drivers"]
AGENT_PACKAGES = {"dr_vtn_dispatcher", "dr_ven_load_control", "dr_mqtt_bridge", "dr_historian", "dr_web",
                  "dr_oadr_ven"}


def _modules(roots: list[Path]) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_500_lines_and_no_class_over_400() -> None:
    too_big = []
    for path in _modules(PRODUCT):
        text = path.read_text()
        if text.count("\n") > 500:
            too_big.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 400:
                too_big.append(f"{path.relative_to(REPO)}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, too_big


def test_the_vtn_service_stays_a_thin_front() -> None:
    """dr.vtn's service is a front over its rooms: at most 300 lines."""
    path = REPO / "agents/vtn_dispatcher/dr_vtn_dispatcher/service.py"
    lines = path.read_text().count("\n")
    assert lines <= 300, f"{path.relative_to(REPO)}: {lines} lines (at most 300)"


def test_one_config_error() -> None:
    defined = [str(p.relative_to(REPO)) for p in _modules(PRODUCT + [REPO / "tests"])
               if re.search(r"^class ConfigError\b", p.read_text(), re.M)]
    assert defined == ["src/dr_common/config.py"]


def test_every_rpc_is_exported_under_a_name_constant() -> None:
    bare = [f"{p.relative_to(REPO)}:{n}" for p in _modules(PRODUCT + [REPO / "tests"])
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.match(r"\s*@RPC\.export\s*(\(\s*\))?\s*$", line) or re.match(r"\s*@RPC\.export\(\s*[\"']", line)]
    assert not bare, bare


def test_no_agent_imports_another_agent() -> None:
    crossings = []
    for package in AGENT_PACKAGES:
        folder = next(p for root in (REPO / "agents", REPO / "web") for p in root.glob(f"*/{package}")
                      if p.is_dir()) if package != "dr_web" else REPO / "web" / "dr_web"
        for path in _modules([folder]):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    top = name.split(".")[0]
                    if top in AGENT_PACKAGES and top != package:
                        crossings.append(f"{path.relative_to(REPO)} imports {name}")
    assert not crossings, crossings
