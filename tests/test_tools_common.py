"""The service tools' shared boilerplate (openais.tools._common): --json, unreachable executive, printing."""

from __future__ import annotations

import io
import json
from typing import TextIO

import pytest

from openais.errors import Library
from openais.tools import _common


def test_parser_has_the_json_flag():
    parser = _common.tool_parser("openais-x", "a tool", json_help="print it as JSON")
    assert parser.prog == "openais-x"
    assert parser.parse_args(["--json"]).json and not parser.parse_args([]).json
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--bogus"])
    assert exc.value.code == _common.EXIT_USAGE


def test_reach_returns_the_result_or_none_with_one_line_on_stderr(capsys):
    assert _common.reach("openais-x", lambda: {"a": 1}) == {"a": 1}

    def down() -> dict:
        raise Library("no executive")

    def gone() -> dict:
        raise FileNotFoundError("no socket")

    assert _common.reach("openais-x", down) is None
    assert _common.reach("openais-x", gone) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("openais-x: cannot reach the executive: ") for line in err)
    assert _common.unreachable("openais-x", OSError("x")) == _common.EXIT_UNREACHABLE == 2


def test_print_document_plain_or_json():
    def plain(doc: dict, out: TextIO) -> None:
        out.write(f"plain {doc['a']}\n")

    out = io.StringIO()
    assert _common.print_document({"a": 1}, False, plain, out) == _common.EXIT_OK
    assert _common.print_document({"a": 1}, True, plain, out) == 0
    first, second = out.getvalue().splitlines()
    assert first == "plain 1" and json.loads(second) == {"version": 1, "a": 1}  # every document is versioned


def test_print_document_writes_to_the_current_stdout(capsys):
    _common.print_document([1, 2], True, lambda doc, out: None)
    assert json.loads(capsys.readouterr().out) == [1, 2]
