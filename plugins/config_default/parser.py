"""The openais.conf(5) / corosync.conf(5) format: ``name { key: value }`` blocks.

Rules (corosync 1.x ``coroparse.c``, made strict):

* One statement per line: ``name {`` opens a section, ``}`` closes one,
  ``key: value`` sets a key.  The key is the text before the first colon; the
  value is everything after it, stripped, so values may contain spaces and
  colons (IPv6 addresses).
* ``#`` starts a comment only as the first non-blank character of a line.
  As in corosync, a ``#`` after a value is *part of the value*
  (``token: 1000 # ms`` is the value ``1000 # ms``, which then fails the
  integer check with a hint).
* Extension: a line may carry several statements when they are braces,
  e.g. ``member { memberaddr: 10.0.0.1 }`` or ``}}``; a value ends before
  trailing `` }`` tokens.
* Errors corosync 1.x ignored silently are rejected here with file and line:
  unbalanced braces, a key outside any section, a line that is neither,
  empty names, and names with characters outside ``[A-Za-z0-9_.-]`` (a
  non-breaking space pasted from a web page is named explicitly).
"""

from __future__ import annotations

import re
import unicodedata

from aisexec.config.errors import ConfigError
from aisexec.config.source import read_text
from aisexec.config.tree import RawKey, RawSection

_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")
_TRAILING_CLOSE = re.compile(r"(?:\s+\})+\s*\Z")
_BLANK = " \t\r\n\f\v"


def _check_name(path: str, line: int, name: str, what: str, context: str) -> None:
    """Raise ConfigError unless ``name`` is a plain identifier."""
    if not name:
        raise ConfigError(path, line, context, f"empty {what} name")
    if _NAME.match(name):
        return
    for ch in name:
        if not _NAME.match(ch):
            label = unicodedata.name(ch, "control character").lower()
            raise ConfigError(
                path, line, context + ("." if context else "") + name.strip(),
                f"{what} name contains {label} (U+{ord(ch):04X}); only letters, digits, '_', '.', '-' are allowed",
            )


def _dotted(stack: list[RawSection]) -> str:
    return ".".join(s.name for s in stack[1:])


def parse_text(text: str, path: str) -> RawSection:
    """Parse openais.conf text into a RawSection tree (root name ``""``)."""
    root = RawSection(name="", line=0, file=path)
    stack = [root]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        rest = raw.strip(_BLANK)
        if rest.startswith("#"):
            continue
        while rest:
            if rest.startswith("}"):
                if len(stack) == 1:
                    raise ConfigError(path, lineno, "", "unexpected '}': no section is open")
                stack.pop()
                rest = rest[1:].lstrip(_BLANK)
                continue
            brace = rest.find("{")
            colon = rest.find(":")
            if brace >= 0 and (colon < 0 or brace < colon):
                name = rest[:brace].strip(_BLANK)
                _check_name(path, lineno, name, "section", _dotted(stack))
                section = RawSection(name=name, line=lineno, file=path)
                stack[-1].sections.append(section)
                stack.append(section)
                rest = rest[brace + 1 :].lstrip(_BLANK)
                continue
            if colon >= 0:
                name = rest[:colon].strip(_BLANK)
                _check_name(path, lineno, name, "key", _dotted(stack))
                if len(stack) == 1:
                    raise ConfigError(path, lineno, name, "key outside any section")
                value = rest[colon + 1 :].strip()
                closes = _TRAILING_CLOSE.search(value)
                tail = ""
                if closes:
                    tail = value[closes.start() :].strip()
                    value = value[: closes.start()].strip()
                stack[-1].keys.append(RawKey(name=name, value=value, line=lineno))
                rest = tail
                continue
            word = rest.split()[0]
            if _NAME.match(word):
                raise ConfigError(path, lineno, _dotted([*stack, RawSection(word, 0, path)]),
                                  "missing ':' after the key (write 'key: value') or '{' after a section name")
            raise ConfigError(path, lineno, "", f"cannot parse {rest[:40]!r}: expected 'key: value', 'name {{' or '}}'")
    if len(stack) > 1:
        open_section = stack[-1]
        raise ConfigError(path, open_section.line, _dotted(stack),
                          "section is never closed (missing '}')")
    return root


def parse_file(path: str) -> RawSection:
    """Read and parse the openais.conf file at ``path``."""
    return parse_text(read_text(path), path)
