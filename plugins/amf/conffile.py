"""The amf.conf syntax: lines into a tree of raw objects with line numbers (no meaning yet).

``Class = name {`` opens an object, ``attribute = value`` sets a value,
``attribute {`` opens a multi-value block whose lines are values taken whole,
``}`` closes.  Objects whose body is a list of values (``safCSIAttr``) are
declared in :data:`VALUE_OBJECTS`.  Every problem raises
:class:`aisexec.config.errors.ConfigError` naming file, line and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aisexec.config.errors import ConfigError

#: Object classes whose body lines are values (one per line), not statements.
VALUE_OBJECTS = frozenset({"safCSIAttr"})
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass
class RawObject:
    """One ``Class = name { ... }`` object as written."""

    cls: str
    name: str
    line: int
    attrs: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # key -> [(value, line)]
    key_lines: dict[str, int] = field(default_factory=dict)
    children: list[RawObject] = field(default_factory=list)
    values: list[tuple[str, int]] = field(default_factory=list)  # body of a value object
    single: set[str] = field(default_factory=set)  # keys written as `key = value`

    def child(self, cls: str) -> list[RawObject]:
        """Children of class ``cls``, in file order."""
        return [c for c in self.children if c.cls == cls]


def parse_text(text: str, path: str) -> RawObject:
    """Parse amf.conf text into a root object whose children are the top-level objects."""
    root = RawObject("", "", 0)
    stack: list[RawObject] = [root]
    block: tuple[str, int, list[tuple[str, int]]] | None = None  # open multi-value attribute block
    for lineno, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        top = stack[-1]
        if block is not None:
            if line == "}":
                key, kline, vals = block
                top.attrs.setdefault(key, []).extend(vals)
                top.key_lines.setdefault(key, kline)
                block = None
            else:
                block[2].append((line, lineno))
            continue
        if top.cls in VALUE_OBJECTS:
            if line == "}":
                stack.pop()
            else:
                top.values.append((line, lineno))
            continue
        if line == "}":
            if len(stack) == 1:
                raise ConfigError(path, lineno, "", "'}' without an open object")
            stack.pop()
            continue
        if line.endswith("{"):
            head = line[:-1].strip()
            if "=" in head:
                cls, _, name = head.partition("=")
                cls, name = cls.strip(), name.strip()
                if not cls:
                    raise ConfigError(path, lineno, "", f"missing class name in {line!r}")
                if not _NAME.fullmatch(name):
                    raise ConfigError(path, lineno, cls, f"object name {name!r} must be 1-64 characters of "
                                                         "[A-Za-z0-9_.-]")
                obj = RawObject(cls, name, lineno)
                top.children.append(obj)
                stack.append(obj)
            else:
                if not head or " " in head:
                    raise ConfigError(path, lineno, "", f"cannot parse {line!r}")
                if len(stack) == 1:
                    raise ConfigError(path, lineno, head, "an attribute block outside any object")
                block = (head, lineno, [])
            continue
        if "=" not in line:
            raise ConfigError(path, lineno, "", f"cannot parse {line!r} (expected 'key = value', "
                                                "'Class = name {' or '}')")
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not key or " " in key:
            raise ConfigError(path, lineno, "", f"cannot parse {line!r}")
        if len(stack) == 1:
            raise ConfigError(path, lineno, key, "an attribute outside any object")
        top.attrs.setdefault(key, []).append((value, lineno))
        top.key_lines.setdefault(key, lineno)
        top.single.add(key)
    if block is not None:
        raise ConfigError(path, block[1], block[0], "block not closed before the end of the file")
    if len(stack) > 1:
        raise ConfigError(path, stack[-1].line, stack[-1].cls, "object not closed before the end of the file")
    return root
