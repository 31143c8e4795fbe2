"""dr.vtn's agent shell: every RPC is exported under its `VtnRpc` name constant, with a docstring, and none is
dispatched by a string literal."""

import ast
import pathlib

from dr_common.topics import VtnRpc

AGENT = pathlib.Path(__file__).resolve().parents[2] / "agents" / "vtn_dispatcher" / "dr_vtn_dispatcher" / "agent.py"


def _exports() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(AGENT.read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                text = ast.unparse(deco)
                if text.startswith("RPC.export"):
                    assert isinstance(deco, ast.Call) and deco.args, f"{node.name}: bare {text}"
                    constant = ast.unparse(deco.args[0])
                    assert constant.startswith("topics.VtnRpc."), f"{node.name}: exported as {constant}"
                    out[constant.rsplit(".", 1)[1]] = node
    return out


def test_every_rpc_is_exported_under_its_constant_with_a_docstring():
    exports = _exports()
    names = {k: v for k, v in vars(VtnRpc).items() if k.isupper()}
    assert set(exports) == set(names)
    for constant, node in exports.items():
        assert node.name == names[constant]
        assert ast.get_docstring(node), node.name


def test_no_rpc_dispatches_by_a_string_literal():
    source = AGENT.read_text()
    assert "getattr(self.service" not in source
    for node in _exports().values():
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "self._call":
                assert not isinstance(call.args[0], ast.Constant), ast.unparse(call)
