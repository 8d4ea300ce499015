"""Every hook of the service contract is specified with a docstring and documented for service authors."""

from __future__ import annotations

import inspect
from pathlib import Path

from aisexec import hookspecs

DOC = (Path(__file__).resolve().parent.parent / "docs" / "services.md").read_text()


def hooks(spec: type) -> list[tuple[str, object]]:
    return [(n, f) for n, f in inspect.getmembers(spec, inspect.isfunction) if not n.startswith("_")]


def test_every_engine_hook_has_a_docstring_and_is_documented():
    for name, fn in hooks(hookspecs.EngineSpec):
        assert inspect.getdoc(fn), f"EngineSpec.{name} has no docstring"
        assert f"`{name}(" in DOC, f"docs/services.md does not document {name}"


def test_discovery_and_parser_hooks_have_docstrings():
    for spec in (hookspecs.ConfigParserSpec, hookspecs.ServiceDiscoverySpec):
        for name, fn in hooks(spec):
            assert inspect.getdoc(fn), f"{spec.__name__}.{name} has no docstring"
    assert "openais_service_engine" in DOC
