"""Security basics, checked on the source: safe YAML, weights-only checkpoint loads, no shell."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smsweep"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def calls(name: str):
    """(file, call) for every call of `<something>.name(...)` or `name(...)` in the package."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == name:
                    yield path.relative_to(PACKAGE.parent), node


def keyword(call: ast.Call, name: str):
    for item in call.keywords:
        if item.arg == name and isinstance(item.value, ast.Constant):
            return item.value.value
    return None


def test_the_package_has_sources():
    assert len(SOURCES) > 20


def test_yaml_is_only_read_with_safe_load():
    assert list(calls("safe_load")), "expected yaml.safe_load somewhere"
    unsafe = [f"{path}:{call.lineno}" for path, call in calls("load") if _is_yaml(call)]
    assert not unsafe, unsafe


def _is_yaml(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "yaml"


@pytest.mark.parametrize("loader", ["load"])
def test_torch_load_is_always_weights_only(loader):
    torch_loads = [
        (path, call)
        for path, call in calls(loader)
        if isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "torch"
    ]
    assert torch_loads, "expected torch.load calls"
    unsafe = [f"{p}:{c.lineno}" for p, c in torch_loads if keyword(c, "weights_only") is not True]
    assert not unsafe, unsafe


def test_no_shell_commands():
    shell = [
        f"{path}:{call.lineno}"
        for name in ("run", "Popen", "call", "check_call", "check_output")
        for path, call in calls(name)
        if keyword(call, "shell") is True
    ]
    assert not shell, shell
    assert not list(calls("system")), "os.system runs a shell"
