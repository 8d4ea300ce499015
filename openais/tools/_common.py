"""What the service tools share: the ``--json`` flag, reaching the executive, exit statuses, printing.

Every tool prints one document: plain text by default, the same document as
one JSON line with ``--json``, carrying ``"version": 1`` like every tool's.  A tool that cannot reach the executive says
so in one line on stderr (``<prog>: cannot reach the executive: <why>``) and
exits :data:`EXIT_UNREACHABLE`; argparse exits :data:`EXIT_USAGE` on bad usage.
A tool that tells an unreachable executive from one that refused the call
says which with :func:`executive_error`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from openais.errors import AisError, Library

T = TypeVar("T")

#: Exit status: done.
EXIT_OK = 0
#: Exit status: the executive cannot be reached (or refused the call); 2 as for openais-cfgtool/clmtool/cpgtool.
EXIT_UNREACHABLE = 2
#: Exit status: bad usage (argparse's own, also 2).
EXIT_USAGE = 2
#: ``"version"`` of every ``--json`` document (stable; keys may be added, none removed or retyped).
SCHEMA_VERSION = 1


def tool_parser(prog: str, description: str, json_help: str = "print JSON") -> argparse.ArgumentParser:
    """An argument parser for ``prog`` with the ``--json`` flag every tool has."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def unreachable(prog: str, exc: BaseException) -> int:
    """Say on stderr that the executive cannot be reached; the exit status for it."""
    sys.stderr.write(f"{prog}: cannot reach the executive: {exc}\n")
    return EXIT_UNREACHABLE


def one_line(exc: BaseException) -> str:
    """``exc``'s text on one line (white space folded), or its type's name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def executive_error(prog: str, exc: BaseException, status: int = EXIT_UNREACHABLE) -> int:
    """Say on stderr in one line why a call to the executive failed; ``status``.

    ``Library`` and OSError: ``<prog>: executive unreachable: <why>``; any
    other AisError: ``<prog>: the executive refused: <why>``.
    """
    what = "executive unreachable" if isinstance(exc, (Library, OSError)) else "the executive refused"
    sys.stderr.write(f"{prog}: {what}: {one_line(exc)}\n")
    return status


def reach(prog: str, call: Callable[[], T]) -> T | None:
    """``call()``, or None after :func:`unreachable` when it raises an AisError or OSError."""
    try:
        return call()
    except (AisError, OSError) as exc:
        unreachable(prog, exc)
        return None


def print_document(doc: Any, as_json: bool, write_plain: Callable[[Any, TextIO], None],
                   out: TextIO | None = None) -> int:
    """Print ``doc`` as one JSON line or with ``write_plain``; :data:`EXIT_OK`."""
    out = sys.stdout if out is None else out
    if as_json:
        if isinstance(doc, dict) and "version" not in doc:
            doc = {"version": SCHEMA_VERSION, **doc}
        json.dump(doc, out)
        out.write("\n")
    else:
        write_plain(doc, out)
    return EXIT_OK


__all__ = ["EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "executive_error", "one_line", "print_document", "reach",
           "tool_parser", "unreachable"]
