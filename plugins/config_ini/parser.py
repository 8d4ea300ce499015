"""An INI form of openais.conf read through configobj.

Nesting is by bracket depth (``[totem]``, ``[[interface]]``, ``[[[member]]]``);
keys are ``key = value``.  configobj forbids two sections of one name under a
parent, so a repeated section carries a label after its name:
``[[interface 0]]``, ``[[interface 1]]``, ``[[[member a]]]``: the first word
is the section name, the rest only makes the header unique.  Values are taken
as written (``list_values`` off, no interpolation); configobj treats ``#``
after a value as a comment.

configobj keeps no line numbers, so they are recovered by scanning the text
with the same section/key grammar (best effort: a key whose line cannot be
found gets its section's line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from configobj import ConfigObj, ConfigObjError

from aisexec.config.errors import ConfigError
from aisexec.config.source import read_text
from aisexec.config.tree import RawKey, RawSection

_SECTION = re.compile(r"^\s*(\[+)\s*(.*?)\s*(\]+)\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[^\s=#'"\[][^=]*?)\s*=""")


@dataclass(slots=True)
class _Scanned:
    """Line numbers of one section header, its keys and its subsections, by name."""

    line: int
    keys: dict[str, int] = field(default_factory=dict)
    children: dict[str, _Scanned] = field(default_factory=dict)


def _scan(text: str) -> _Scanned:
    """Recover the line of every section header and key from the raw text."""
    root = _Scanned(line=0)
    stack = [root]
    for lineno, raw in enumerate(text.splitlines(), start=1):
        m = _SECTION.match(raw)
        if m and len(m.group(1)) == len(m.group(3)):
            depth = len(m.group(1))
            del stack[depth:]
            if len(stack) < depth:  # too nested: configobj reports it
                continue
            node = _Scanned(line=lineno)
            stack[-1].children.setdefault(m.group(2), node)
            stack.append(node)
            continue
        k = _KEY.match(raw)
        if k:
            stack[-1].keys.setdefault(k.group(1).strip("\"'"), lineno)
    return root


def _label_check(path: str, line: int, header: str) -> str:
    """The section name of a header like ``interface 0``."""
    name = header.split()[0] if header.split() else ""
    if not name:
        raise ConfigError(path, line, "", "empty section name")
    return name


def _build(cobj, scanned: _Scanned, name: str, path: str) -> RawSection:
    section = RawSection(name=name, line=scanned.line, file=path)
    for key in cobj.scalars:
        value = cobj[key]
        section.keys.append(RawKey(name=key, value=str(value).strip(), line=scanned.keys.get(key, scanned.line)))
    for header in cobj.sections:
        child_scan = scanned.children.get(header, _Scanned(line=scanned.line))
        child_name = _label_check(path, child_scan.line, header)
        section.sections.append(_build(cobj[header], child_scan, child_name, path))
    return section


def parse_text(text: str, path: str) -> RawSection:
    """Parse the INI text into a RawSection tree (root name ``""``)."""
    try:
        cobj = ConfigObj(text.splitlines(), list_values=False, interpolation=False, raise_errors=True,
                         file_error=False)
    except ConfigObjError as exc:
        message = str(exc).split(" at line ")[0].rstrip(".")
        raise ConfigError(path, exc.line_number or 0, "", f"{message}: {exc.line.strip()!r}") from exc
    root = _build(cobj, _scan(text), "", path)
    if root.keys:
        first = root.keys[0]
        raise ConfigError(path, first.line, first.name, "key outside any section")
    return root


def parse_file(path: str) -> RawSection:
    """Read and parse the INI configuration file at ``path``."""
    return parse_text(read_text(path), path)
