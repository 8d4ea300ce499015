"""One definition per message: declarative wire layouts with a fast encoder and a strict decoder.

Every IPC request, response and callback of the library and every cluster
message of a service is a :class:`Message` subclass whose class body lists its
fields, in wire order, as field objects::

    from openais.message import Message, U32, U64, Str, Bytes, List, Enum

    class Write(Message):
        \"\"\"Write ``data`` at ``offset`` of one section.\"\"\"

        checkpoint = U64()
        section_id = Bytes(max_len=256)
        offset = U64()
        data = Bytes(max_len=1 << 20)

    frame = Write(checkpoint=7, section_id=b"s", offset=0, data=b"x").encode()
    msg = Write.decode(frame)          # a NamedTuple: msg.offset, msg.data ...

The class becomes a :class:`typing.NamedTuple`-like tuple with those fields
(defaults allowed from the first defaulted field on), an ``encode()`` method
and a ``decode(buffer)`` class method, both generated once per class as
straight-line code: consecutive fixed-width fields are packed by one
:class:`struct.Struct`, network byte order.  The code is generated and
compiled at the first use of any of the class's functions, not when the
class is made (an executive defines a few hundred messages and uses few of
them); a reference taken before (``_unpack = Msg.unpack``) runs the generated
code directly once it exists.

The decoder rejects anything malformed with :class:`MessageError`, which names
the message and the field: a truncated frame, trailing bytes, a length or
count over its limit, an unknown enum value, a boolean byte other than 0 or 1,
invalid UTF-8, a presence flag other than 0 or 1.  It checks every
length and count against the bytes actually left before it slices or loops,
so it never allocates more than the frame it was given.  The encoder checks
the same limits and raises the same error (integers out of range included).

Field types
    ``U8 U16 U32 U64 I32 I64 F64 Bool``      fixed-width scalars
    ``Enum(cls, width=1|2|4, values=None)``  an IntEnum (or the admitted ``values``), checked both ways
    ``Bytes(max_len, min_len=0, view=False)`` u32 length + bytes
    ``Str(max_len, min_len=0)``              u16 length + UTF-8 (limits in bytes)
    ``Json(max_len, kind=dict)``             u32 length + a JSON document whose top level is a ``kind``
    ``Tail(max_len, view=False)``            the rest of the frame, no length (last field only)
    ``List(item, max_count)``                u32 count + items (a field or a Message class)
    ``Nested(cls)``                          an embedded Message
    ``Optional(field)``                      u8 presence flag + field; ``None`` when absent

``view=True`` makes ``Bytes``/``Tail`` decode to a :class:`memoryview` into the
frame instead of a copy (hot paths that forward data unchanged).  An
``Optional`` defaults to None unless a field without a default follows it.

A subclass of a message class extends it: its fields follow the inherited
ones (``class Leave(Join): reason = Enum(Reason)``; ``class Other(Join): pass``
is the same layout under another name).  ``Cls.fixed`` is the
:class:`struct.Struct` of a message made only of fixed-width fields.

Hot paths call ``Cls.pack(a, b, c)``: it checks every limit like ``encode`` and
builds the frame with one join, without building the tuple first; and
``a, b, c = Cls.unpack(frame)``, as strict as ``decode`` but returning a plain
tuple (building a tuple subclass instance costs more than decoding a small
message).  A value of the wrong type or out of range raises MessageError
naming its field (found after the fact, off the fast path); inside a nested
message or a list item the field is a path, ``entries[3].group``.
"""

from __future__ import annotations

import enum
import json
import operator
import struct
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

__all__ = [  # noqa: RUF022 - grouped: scalars, then the other fields, then the classes
    "U8", "U16", "U32", "U64", "I32", "I64", "F64", "Bool", "Enum",
    "Bytes", "Str", "Json", "Tail", "List", "Nested", "Optional", "Field", "Message", "MessageError",
    "head_struct",
]

_NO_DEFAULT = object()
_IMPLICIT_NONE = object()  # an Optional's default: None when every later field has a default too


class MessageError(ValueError):
    """A message that does not decode (or encode): carries the message name, the field and why."""

    def __init__(self, message: str, field: str | None, reason: str) -> None:
        self.message_name = message
        self.field = field
        self.reason = reason
        where = f"{message}.{field}" if field else message
        super().__init__(f"{where}: {reason}")


class Field:
    """Base of every field type: one position of a message's layout."""

    code: str | None = None  #: struct code of a fixed-width scalar, None for variable fields
    min_size = 0  #: fewest bytes an encoded value takes (bounds list counts before looping)

    def __init__(self, *, default: Any = _NO_DEFAULT) -> None:
        self.default = default
        self.name = ""
        self.order = Field._counter
        Field._counter += 1

    _counter: ClassVar[int] = 0

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name


class _Scalar(Field):
    def __init__(self, *, default: Any = _NO_DEFAULT) -> None:
        super().__init__(default=default)
        self.min_size = struct.calcsize("!" + self.code)  # type: ignore[operator]


class U8(_Scalar):
    """Unsigned 8-bit integer."""

    code = "B"


class U16(_Scalar):
    """Unsigned 16-bit integer."""

    code = "H"


class U32(_Scalar):
    """Unsigned 32-bit integer."""

    code = "I"


class U64(_Scalar):
    """Unsigned 64-bit integer."""

    code = "Q"


class I32(_Scalar):
    """Signed 32-bit integer."""

    code = "i"


class I64(_Scalar):
    """Signed 64-bit integer."""

    code = "q"


class F64(_Scalar):
    """IEEE double."""

    code = "d"


class Bool(_Scalar):
    """A boolean (one byte, 0 or 1; any other byte is rejected on decode)."""

    code = "?"


class Enum(_Scalar):
    """An :class:`enum.IntEnum` member on ``width`` bytes; a value outside the enum is rejected.

    ``values`` narrows what this field admits to some of the members (a LEAVE
    message whose reason may only be LEAVE or PROCDOWN); encode and decode
    both check it.
    """

    def __init__(self, cls: type[enum.IntEnum], width: int = 1, *, values: Iterable[int] | None = None,
                 default: Any = _NO_DEFAULT) -> None:
        self.code = {1: "B", 2: "H", 4: "I"}[width]
        self.enum = cls
        admitted = tuple(cls) if values is None else tuple(cls(v) for v in values)
        #: value -> member, the values this field admits
        self.members: dict[int, enum.IntEnum] = {int(m): m for m in admitted}
        super().__init__(default=default)


class Bytes(Field):
    """Bytes with a u32 length prefix, ``min_len..max_len`` long."""

    min_size = 4

    def __init__(self, max_len: int, min_len: int = 0, *, view: bool = False, default: Any = _NO_DEFAULT) -> None:
        super().__init__(default=default)
        self.max_len, self.min_len, self.view = max_len, min_len, view


class Str(Field):
    """UTF-8 text with a u16 length prefix (u32 when ``max_len`` > 65535); limits in bytes."""

    def __init__(self, max_len: int, min_len: int = 0, *, default: Any = _NO_DEFAULT) -> None:
        super().__init__(default=default)
        self.max_len, self.min_len = max_len, min_len
        self.wide = max_len > 0xFFFF
        self.min_size = 4 if self.wide else 2


class Json(Str):
    """A JSON document as UTF-8 text with a u32 length prefix, for the rare free-form value (counters
    for tools); ``kind`` is the type its top level must have.  Prefer typed fields everywhere else."""

    def __init__(self, max_len: int, kind: type = dict, *, default: Any = _NO_DEFAULT) -> None:
        super().__init__(max_len=max_len, default=default)
        self.wide, self.min_size = True, 4
        self.kind = kind


class Tail(Field):
    """The rest of the frame, without a length: only as the last field."""

    def __init__(self, max_len: int, *, view: bool = False, default: Any = _NO_DEFAULT) -> None:
        super().__init__(default=default)
        self.max_len, self.view = max_len, view


class List(Field):
    """A u32 count, then ``count`` items (a field object or a Message class), at most ``max_count``."""

    min_size = 4

    def __init__(self, item: Field | type[Message], max_count: int, *, default: Any = _NO_DEFAULT) -> None:
        super().__init__(default=default)
        self.item = item
        self.max_count = max_count


class Nested(Field):
    """An embedded message (its fields inline, no length)."""

    def __init__(self, cls: type[Message], *, default: Any = _NO_DEFAULT) -> None:
        super().__init__(default=default)
        self.cls = cls
        self.min_size = cls._min_size


class Optional(Field):
    """A u8 presence flag, then the field when present; decodes to None when absent."""

    min_size = 1

    def __init__(self, field: Field, *, default: Any = _IMPLICIT_NONE) -> None:
        super().__init__(default=default)
        self.field = field


#: The field types code is generated for (a List's item may also be a Message class).
_FIELD_TYPES = (_Scalar, Bytes, Str, Tail, List, Nested, Optional)

# -- code generation ------------------------------------------------------------------------------
#
# Each class gets three generated functions:
#   _pack(field, ...)          -> bytes   the public ``Cls.pack``; one ``b"".join`` (or ``+``) at the end
#   _encode_parts(self, _p)               appends the parts of one value through ``_p`` (nesting, lists)
#   _decode_at(_m, _o, _end)   -> (message, offset after it)
# The encoder's checks raise MessageError naming the field; anything else that goes wrong (a value of
# the wrong type, an int out of range) is caught once around the whole body and attributed to its field
# by _diagnose, off the fast path.

_U8S = struct.Struct("!B")
_U16S = struct.Struct("!H")
_U32S = struct.Struct("!I")


class _Enc:
    """The lines of one encoder body: straight (parts joined at the end) or through ``_p`` appends."""

    def __init__(self, gen: _Gen, straight: bool) -> None:
        self.gen = gen
        self.straight = straight
        self.lines: list[str] = []
        self.parts: list[tuple[str, bool]] = []  # (expression, is it a bytes object we made)

    def line(self, ind: str, text: str) -> None:
        self.lines.append(ind + text)

    def part(self, ind: str, expr: str, made: bool) -> None:
        if self.straight:
            self.parts.append((expr, made))
        else:
            self.lines.append(f"{ind}_p({expr})")

    def result(self) -> str:
        """The expression a straight body returns."""
        if not self.parts:
            return "b''"
        if len(self.parts) == 1 and self.parts[0][1]:
            return self.parts[0][0]
        if len(self.parts) == 2 and self.parts[0][1]:
            return f"{self.parts[0][0]} + {self.parts[1][0]}"
        return f"b''.join(({', '.join(e for e, _ in self.parts)},))"


class _Gen:
    """Holds the constants the generated source of one class refers to."""

    def __init__(self, cls_name: str, env: dict[str, Any] | None = None) -> None:
        self.cn = cls_name
        self.env: dict[str, Any] = {} if env is None else env
        self.env.update({"MessageError": MessageError, "struct": struct, "_trunc": _trunc, "_bad": _bad,
                         "_nest": _nest, "bytes": bytes, "str": str, "len": len, "any": any})
        self._n = 0

    def const(self, value: Any) -> str:
        self._n += 1
        name = f"_c{self._n}"
        self.env[name] = value
        return name

    def var(self) -> str:
        self._n += 1
        return f"_v{self._n}"


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def _trunc(cls_name: str, field: str) -> MessageError:
    return MessageError(cls_name, field, "truncated")


def _bad(cls_name: str, field: str | None, reason: str) -> MessageError:
    return MessageError(cls_name, field, reason)


def _nest(cls_name: str, path: str, inner: MessageError) -> MessageError:
    """An error inside an embedded message, named from the outer one (``entries[3].group``)."""
    return MessageError(cls_name, f"{path}.{inner.field}" if inner.field else path, inner.reason)


def _is_straight(fields: list[Field]) -> bool:
    """True when no field needs a loop or a branch: the encoder can join its parts at the end."""
    return all(f.code is not None or isinstance(f, (Bytes, Str, Tail)) for f in fields)


def _enc_fixed(enc: _Enc, run: list[tuple[str, Field]], ind: str) -> None:
    """One struct for a run of fixed-width fields, after the enum checks."""
    gen = enc.gen
    for expr, f in run:
        if isinstance(f, Enum):
            enc.line(ind, f"if {expr} not in {gen.const(f.members)}: raise _bad({gen.cn!r}, {f.name!r}, "
                          f"f'{{{expr}!r}} is not an admitted {f.enum.__name__} value')")
    s = gen.const(struct.Struct("!" + "".join(f.code for _, f in run)))  # type: ignore[misc]
    enc.part(ind, f"{s}.pack({', '.join(e for e, _ in run)})", True)


def _enc_var(enc: _Enc, expr: str, f: Field, ind: str) -> None:
    gen = enc.gen
    cn = gen.cn
    if isinstance(f, (Bytes, Tail)):
        n = gen.var()
        lo = getattr(f, "min_len", 0)
        enc.line(ind, f"{n} = len({expr})")
        cond = f"{n} > {f.max_len}" if lo == 0 else f"not {lo} <= {n} <= {f.max_len}"
        enc.line(ind, f"if {cond}: raise _bad({cn!r}, {f.name!r}, f'length {{{n}}} outside {lo}..{f.max_len}')")
        if isinstance(f, Bytes):
            enc.part(ind, f"{gen.const(_U32S)}.pack({n})", True)
        enc.part(ind, expr, False)
    elif isinstance(f, Str):
        raw, n = gen.var(), gen.var()
        if isinstance(f, Json):
            enc.line(ind, f"if not isinstance({expr}, {gen.const(f.kind)}): raise _bad({cn!r}, {f.name!r}, "
                          f"'not a {f.kind.__name__}')")
            enc.line(ind, f"{raw} = {gen.const(_json_dumps)}({expr}).encode('utf-8')")
        else:
            enc.line(ind, f"{raw} = {expr}.encode('utf-8')")
        enc.line(ind, f"{n} = len({raw})")
        cond = f"{n} > {f.max_len}" if f.min_len == 0 else f"not {f.min_len} <= {n} <= {f.max_len}"
        enc.line(ind, f"if {cond}: raise _bad({cn!r}, {f.name!r}, "
                      f"f'length {{{n}}} bytes outside {f.min_len}..{f.max_len}')")
        enc.part(ind, f"{gen.const(_U32S if f.wide else _U16S)}.pack({n})", True)
        enc.part(ind, raw, True)
    elif isinstance(f, List):
        n, it = gen.var(), gen.var()
        enc.line(ind, f"{n} = len({expr})")
        enc.line(ind, f"if {n} > {f.max_count}: raise _bad({cn!r}, {f.name!r}, "
                      f"f'{{{n}}} items, at most {f.max_count}')")
        enc.part(ind, f"{gen.const(_U32S)}.pack({n})", True)
        item = f.item
        if isinstance(item, type) and issubclass(item, Message):
            enc.line(ind, f"for {it} in {expr}: {gen.const(item._encode_parts)}({it}, _p)")
        elif item.code is not None:
            if isinstance(item, Enum):
                enc.line(ind, f"for {it} in {expr}:")
                enc.line(ind, f"    if {it} not in {gen.const(item.members)}: raise _bad({cn!r}, {f.name!r}, "
                              f"f'{{{it}!r}} is not an admitted {item.enum.__name__} value')")
            enc.part(ind, f"struct.pack(f'!{{{n}}}{item.code}', *{expr})", True)
        else:
            item.name = f.name
            enc.line(ind, f"for {it} in {expr}:")
            _enc_var(enc, it, item, ind + "    ")
    elif isinstance(f, Nested):
        enc.line(ind, f"{gen.const(f.cls._encode_parts)}({expr}, _p)")
    elif isinstance(f, Optional):
        enc.line(ind, f"if {expr} is None: _p(b'\\x00')")
        enc.line(ind, "else:")
        enc.line(ind, "    _p(b'\\x01')")
        inner = f.field
        inner.name = f.name
        if inner.code is not None:
            _enc_fixed(enc, [(expr, inner)], ind + "    ")
        else:
            _enc_var(enc, expr, inner, ind + "    ")
    else:  # pragma: no cover - every field type is handled above
        raise TypeError(f"unknown field type {type(f).__name__}")


def _enc_body(gen: _Gen, fields: list[Field], names: list[str], ind: str, straight: bool) -> _Enc:
    enc = _Enc(gen, straight)
    run: list[tuple[str, Field]] = []
    for f, name in zip(fields, names, strict=True):
        if f.code is not None:
            run.append((name, f))
            continue
        if run:
            _enc_fixed(enc, run, ind)
            run = []
        _enc_var(enc, name, f, ind)
    if run:
        _enc_fixed(enc, run, ind)
    return enc


def _dec_code(f: Field) -> str:
    return "B" if isinstance(f, Bool) else f.code  # type: ignore[return-value]


def _dec_fixed(gen: _Gen, d: list[str], run: list[tuple[str, Field]], ind: str, at: int | None = None) -> None:
    """One struct for a run of fixed-width fields at ``_o`` (or at the constant offset ``at``)."""
    cn = gen.cn
    st = struct.Struct("!" + "".join(_dec_code(f) for _, f in run))
    ends, offset = [], 0
    for _, f in run:
        offset += f.min_size
        ends.append((offset, f.name))
    which = gen.const(tuple(ends))
    base = "_o" if at is None else str(at)
    d.append(f"{ind}if {base} + {st.size} > _end: "
             f"raise _trunc({cn!r}, next(n for e, n in {which} if {base} + e > _end))")
    if st.size == 1:  # one byte: indexing the view is cheaper than a struct
        d.append(f"{ind}{run[0][0]} = _m[{base}]")
    else:
        d.append(f"{ind}{', '.join(v for v, _ in run)}, = {gen.const(st)}.unpack_from(_m, {base})")
    if at is None:
        d.append(f"{ind}_o += {st.size}")
    for v, f in run:
        if isinstance(f, Enum):
            d.append(f"{ind}try: {v} = {gen.const(f.members)}[{v}]")
            d.append(f"{ind}except KeyError: raise _bad({cn!r}, {f.name!r}, "
                     f"f'unknown {f.enum.__name__} value {{{v}}}') from None")
        elif isinstance(f, Bool):
            d.append(f"{ind}if {v} > 1: raise _bad({cn!r}, {f.name!r}, f'boolean byte {{{v}}}')")
            d.append(f"{ind}{v} = {v} == 1")


def _dec_var(gen: _Gen, d: list[str], target: str, f: Field, ind: str) -> None:
    cn = gen.cn
    if isinstance(f, Bytes):
        n = gen.var()
        d.append(f"{ind}if _o + 4 > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{n}, = {gen.const(_U32S)}.unpack_from(_m, _o); _o += 4")
        cond = f"{n} > {f.max_len}" if f.min_len == 0 else f"not {f.min_len} <= {n} <= {f.max_len}"
        d.append(f"{ind}if {cond}: raise _bad({cn!r}, {f.name!r}, f'length {{{n}}} outside {f.min_len}..{f.max_len}')")
        d.append(f"{ind}if _o + {n} > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{target} = _m[_o:_o + {n}]" if f.view else f"{ind}{target} = bytes(_m[_o:_o + {n}])")
        d.append(f"{ind}_o += {n}")
    elif isinstance(f, Tail):
        d.append(f"{ind}if _end - _o > {f.max_len}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'length {{_end - _o}} outside 0..{f.max_len}')")
        d.append(f"{ind}{target} = _m[_o:_end]" if f.view else f"{ind}{target} = bytes(_m[_o:_end])")
        d.append(f"{ind}_o = _end")
    elif isinstance(f, Str):
        n, w = gen.var(), 4 if f.wide else 2
        d.append(f"{ind}if _o + {w} > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{n}, = {gen.const(_U32S if f.wide else _U16S)}.unpack_from(_m, _o); _o += {w}")
        cond = f"{n} > {f.max_len}" if f.min_len == 0 else f"not {f.min_len} <= {n} <= {f.max_len}"
        d.append(f"{ind}if {cond}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'length {{{n}}} bytes outside {f.min_len}..{f.max_len}')")
        d.append(f"{ind}if _o + {n} > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}try: {target} = str(_m[_o:_o + {n}], 'utf-8')")
        d.append(f"{ind}except UnicodeDecodeError: raise _bad({cn!r}, {f.name!r}, 'not UTF-8') from None")
        d.append(f"{ind}_o += {n}")
        if isinstance(f, Json):
            d.append(f"{ind}try: {target} = {gen.const(json.loads)}({target})")
            d.append(f"{ind}except ValueError as _e: raise _bad({cn!r}, {f.name!r}, f'not JSON: {{_e}}') from None")
            d.append(f"{ind}if not isinstance({target}, {gen.const(f.kind)}): raise _bad({cn!r}, {f.name!r}, "
                     f"'not a JSON {f.kind.__name__}')")
    elif isinstance(f, List):
        n, acc, it = gen.var(), gen.var(), gen.var()
        item = f.item
        is_msg = isinstance(item, type) and issubclass(item, Message)
        min_item = max(1, item._min_size if is_msg else item.min_size)
        d.append(f"{ind}if _o + 4 > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{n}, = {gen.const(_U32S)}.unpack_from(_m, _o); _o += 4")
        d.append(f"{ind}if {n} > {f.max_count}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'{{{n}}} items, at most {f.max_count}')")
        d.append(f"{ind}if {n} * {min_item} > _end - _o: raise _trunc({cn!r}, {f.name!r})")
        if is_msg:
            dec = gen.const(item._decode_at)
            d.append(f"{ind}{acc} = []")
            d.append(f"{ind}try:")
            d.append(f"{ind}    for {it} in range({n}):")
            d.append(f"{ind}        _x, _o = {dec}(_m, _o, _end)")
            d.append(f"{ind}        {acc}.append(_x)")
            d.append(f"{ind}except MessageError as _e: raise _nest({cn!r}, f'{f.name}[{{{it}}}]', _e) from None")
        elif item.code is not None:
            code = _dec_code(item)
            d.append(f"{ind}{acc} = list(struct.unpack_from(f'!{{{n}}}{code}', _m, _o)); _o += {n} * {item.min_size}")
            if isinstance(item, Enum):
                members = gen.const(item.members)
                d.append(f"{ind}if not all(_x in {members} for _x in {acc}): raise _bad({cn!r}, {f.name!r}, "
                         f"f'unknown {item.enum.__name__} value {{next(_x for _x in {acc} if _x not in {members})}}')")
                d.append(f"{ind}{acc} = [{members}[_x] for _x in {acc}]")
            elif isinstance(item, Bool):
                d.append(f"{ind}if any(_x > 1 for _x in {acc}): raise _bad({cn!r}, {f.name!r}, 'boolean byte over 1')")
                d.append(f"{ind}{acc} = [_x == 1 for _x in {acc}]")
        else:
            item.name = f.name
            d.append(f"{ind}{acc} = []")
            d.append(f"{ind}for {it} in range({n}):")
            _dec_var(gen, d, "_x", item, ind + "    ")
            d.append(f"{ind}    {acc}.append(_x)")
        d.append(f"{ind}{target} = {acc}")
    elif isinstance(f, Nested):
        d.append(f"{ind}try: {target}, _o = {gen.const(f.cls._decode_at)}(_m, _o, _end)")
        d.append(f"{ind}except MessageError as _e: raise _nest({cn!r}, {f.name!r}, _e) from None")
    elif isinstance(f, Optional):
        d.append(f"{ind}if _o + 1 > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}_flag = _m[_o]; _o += 1")
        d.append(f"{ind}if _flag == 0: {target} = None")
        d.append(f"{ind}elif _flag == 1:")
        inner = f.field
        inner.name = f.name
        if inner.code is not None:
            _dec_fixed(gen, d, [(target, inner)], ind + "    ")
        else:
            _dec_var(gen, d, target, inner, ind + "    ")
        d.append(f"{ind}else: raise _bad({cn!r}, {f.name!r}, f'presence flag {{_flag}}')")
    else:  # pragma: no cover
        raise TypeError(f"unknown field type {type(f).__name__}")


def _dec_body(gen: _Gen, fields: list[Field], *, whole: bool) -> tuple[list[str], list[str]]:
    """The decoding statements of ``fields`` and the names they decode into.

    ``whole``: for a decoder of the whole frame (``_o`` starts at 0, ``_end`` is its length, and a
    trailing-bytes check ends it): the offsets of the leading fixed-width fields are constants.
    """
    body: list[str] = []
    targets = []
    run: list[tuple[str, Field]] = []
    static: int | None = 0 if whole else None  # the offset while it is known when generating

    def flush() -> None:
        nonlocal static
        if not run:
            return
        if static is None:
            _dec_fixed(gen, body, run, "    ")
        else:
            static = _dec_fixed_at(gen, body, run, static)
        run.clear()

    for i, f in enumerate(fields):
        t = f"_f{i}"
        targets.append(t)
        if f.code is not None:
            run.append((t, f))
            continue
        flush()
        if static is not None and isinstance(f, Tail):
            _dec_tail_at(gen, body, t, f, static)
            return body, targets
        if static is not None and type(f) is Str:
            _dec_str_at(gen, body, t, f, static)
            static = None
            continue
        if static is not None:
            body.append(f"    _o = {static}")
            static = None
        _dec_var(gen, body, t, f, "    ")
        if whole and isinstance(f, Tail):
            body.pop()  # "_o = _end": nothing follows a tail
    flush()
    if whole and not (fields and isinstance(fields[-1], Tail)):
        at = "_o" if static is None else str(static)
        body.append(f"    if {at} != _end: raise _bad({gen.cn!r}, None, f'{{_end - {at}}} trailing bytes')")
    return body, targets


def _dec_fixed_at(gen: _Gen, d: list[str], run: list[tuple[str, Field]], at: int) -> int:
    """:func:`_dec_fixed` at the constant offset ``at``; returns the offset after the run."""
    _dec_fixed(gen, d, run, "    ", at)
    return at + sum(f.min_size for _, f in run)


def _dec_str_at(gen: _Gen, d: list[str], target: str, f: Str, at: int) -> None:
    """A Str that starts at the constant offset ``at`` (a group name first in a message)."""
    cn, n, w = gen.cn, gen.var(), 4 if f.wide else 2
    d.append(f"    if {at + w} > _end: raise _trunc({cn!r}, {f.name!r})")
    d.append(f"    {n}, = {gen.const(_U32S if f.wide else _U16S)}.unpack_from(_m, {at})")
    cond = f"{n} > {f.max_len}" if f.min_len == 0 else f"not {f.min_len} <= {n} <= {f.max_len}"
    d.append(f"    if {cond}: raise _bad({cn!r}, {f.name!r}, f'length {{{n}}} bytes outside {f.min_len}..{f.max_len}')")
    d.append(f"    _o = {at + w} + {n}")
    d.append(f"    if _o > _end: raise _trunc({cn!r}, {f.name!r})")
    d.append(f"    try: {target} = str(_m[{at + w}:_o], 'utf-8')")
    d.append(f"    except UnicodeDecodeError: raise _bad({cn!r}, {f.name!r}, 'not UTF-8') from None")


def _dec_tail_at(gen: _Gen, d: list[str], target: str, f: Tail, at: int) -> None:
    """A Tail that starts at the constant offset ``at``."""
    d.append(f"    if _end - {at} > {f.max_len}: raise _bad({gen.cn!r}, {f.name!r}, "
             f"f'length {{_end - {at}}} outside 0..{f.max_len}')")
    d.append(f"    {target} = _m[{at}:]" if f.view else f"    {target} = bytes(_m[{at}:])")


def _check_layout(cls_name: str, fields: list[Field]) -> None:
    """Raise TypeError for a layout no code can be generated for (checked when the class is made)."""
    for i, f in enumerate(fields):
        if isinstance(f, Tail) and i != len(fields) - 1:
            raise TypeError(f"{cls_name}.{f.name}: Tail must be the last field")
        inner: Any = f
        while isinstance(inner, (List, Optional)):
            inner = inner.item if isinstance(inner, List) else inner.field
        if not (isinstance(inner, _FIELD_TYPES) or (isinstance(inner, type) and issubclass(inner, Message))):
            raise TypeError(f"{cls_name}.{f.name}: unknown field type {type(inner).__name__}")


def _build(cls_name: str, fields: list[Field], *, blame: str | None = None,
           env: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate and compile the five functions of one message class (into ``env`` when given).

    ``blame``: the field every unexpected error is attributed to (the one-field encoders that
    :func:`_diagnose` builds); None: find the field with :func:`_diagnose`.
    """
    _check_layout(cls_name, fields)
    gen = _Gen(cls_name, env)
    names = [f.name for f in fields]
    args = ", ".join(names)
    src = ["def _encode_parts(self, _p):"]
    if names:
        src.append(f"    {args}, = self")
    src.extend(_enc_body(gen, fields, names, "    ", straight=False).lines)
    src.append("    return None")
    src.append("")
    src.append(f"def _pack({args}):")
    straight = _is_straight(fields)
    if not straight:
        src.append("    _l = []")
        src.append("    _p = _l.append")
    src.append("    try:")
    enc = _enc_body(gen, fields, names, "        ", straight=straight)
    src.extend(enc.lines)
    src.append(f"        return {enc.result()}" if straight else "        return b''.join(_l)")
    src.append("    except MessageError as _e:")
    src.append(f"        if _e.message_name == {cls_name!r}: raise")
    if blame is None:
        src.append(f"        raise _diagnose(_cls, ({args}{',' if names else ''}), _e) from None")
    else:
        src.append(f"        raise _nest({cls_name!r}, {blame!r}, _e) from None")
    src.append("    except Exception as _e:")
    if blame is None:
        src.append(f"        raise _diagnose(_cls, ({args}{',' if names else ''}), _e) from None")
    else:
        src.append(f"        raise _bad({cls_name!r}, {blame!r}, _reason(_e)) from None")
    src.append("")
    body, targets = _dec_body(gen, fields, whole=False)
    whole, _ = _dec_body(gen, fields, whole=True)
    listed = f"({', '.join(targets)}{',' if targets else ''})"
    src.append("def _decode_at(_m, _o, _end):")
    src.extend(body)
    src.append(f"    return _new(_cls, {listed}), _o")
    src.append("")
    # the whole-frame decoders: the same checks, inlined, with the offsets of the leading fixed fields
    # folded in (one Python call per message on the hot paths); _unpack returns the values as a plain
    # tuple (building the tuple subclass costs more than the rest of a small message)
    for name, result in (("_decode", f"_new(_cls, {listed})"), ("_unpack", listed)):
        src.append(f"def {name}(_b):")
        src.append("    _m = _b if _b.__class__ is memoryview else memoryview(_b)")
        src.append("    _end = len(_m)")
        src.extend(whole)
        src.append(f"    return {result}")
        src.append("")
    env = gen.env
    env["_new"] = tuple.__new__
    env["_diagnose"] = _diagnose
    env["_reason"] = _reason
    exec(compile("\n".join(src) + "\n", f"<message {cls_name}>", "exec"), env)  # our own generated code
    return env


def head_struct(cls: type[Message], stop: str | None = None) -> struct.Struct:
    """The struct of ``cls``'s leading fixed-width fields: up to ``stop`` (excluded), or to the first variable one.

    For a hot path that reads those fields itself (a prefix it copies, or the head of a message
    whose variable part it has seen before): the layout still comes from the one definition.  Only
    plain numbers may be in it (a ``Bool`` or an ``Enum``, which the strict decoder checks, raises
    TypeError), so what it unpacks is what the strict decoder would give.
    """
    codes = []
    for f in cls._field_defs:  # type: ignore[attr-defined]
        if f.name == stop:
            break
        if f.code is None:
            if stop is None:
                break
            raise TypeError(f"{cls.__name__}: the variable field {f.name!r} comes before {stop!r}")
        if isinstance(f, (Bool, Enum)):
            raise TypeError(f"{cls.__name__}.{f.name}: a checked field cannot be in a raw head")
        codes.append(f.code)
    else:
        if stop is not None:
            raise TypeError(f"{cls.__name__} has no field {stop!r}")
    return struct.Struct("!" + "".join(codes))


def _diagnose(cls: type[Message], values: tuple, error: Exception) -> MessageError:
    """The MessageError for an unexpected ``error`` of ``cls.pack(*values)``: find the field at fault."""
    packers = cls.__dict__.get("_field_packers")
    if packers is None:
        packers = [_build(cls.__name__, [f], blame=f.name)["_pack"] for f in cls._field_defs]
        type.__setattr__(cls, "_field_packers", packers)
    for pack, value in zip(packers, values, strict=True):
        try:
            pack(value)
        except MessageError as exc:
            return exc
    return MessageError(cls.__name__, None, _reason(error))


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, struct.error) else f"{type(error).__name__}: {error}"


class _MessageMeta(type):
    """Turns a class body of fields into a tuple class with generated encode/decode."""

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> type:
        if not any(isinstance(b, _MessageMeta) for b in bases):
            return super().__new__(mcs, name, bases, ns)
        for key, value in list(ns.items()):
            if isinstance(value, Field):
                value.name = key
        own = sorted((v for v in ns.values() if isinstance(v, Field)), key=lambda f: f.order)
        for f in own:
            del ns[f.name]
        inherited = [f for b in bases for f in getattr(b, "_field_defs", ())]
        fields = inherited + own
        names = tuple(f.name for f in fields)
        if len(set(names)) != len(names):
            raise TypeError(f"{name}: a field name is used twice in {names}")
        defaults = [f.default for f in fields]
        later_required = False
        for i in range(len(defaults) - 1, -1, -1):
            if defaults[i] is _IMPLICIT_NONE:
                defaults[i] = _NO_DEFAULT if later_required else None
            later_required = later_required or defaults[i] is _NO_DEFAULT
        seen_default = False
        for f, d in zip(fields, defaults, strict=True):
            if d is not _NO_DEFAULT:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{name}.{f.name}: a field without a default follows one with a default")
        ns["__slots__"] = ()
        ns["_fields"] = names
        ns["_field_defs"] = tuple(fields)
        ns["_min_size"] = sum(f.min_size for f in fields)
        ns["fixed"] = (struct.Struct("!" + "".join(f.code for f in fields))  # type: ignore[misc]
                       if all(f.code is not None for f in fields) else None)
        for index, fname in enumerate(names):
            ns[fname] = _field_property(index, f"Field {index}: {fname}")
        cls = super().__new__(mcs, name, bases, ns)
        _check_layout(name, list(fields))
        codecs = _Lazy(lambda env: _build(name, list(fields), env=env), {"_cls": cls})
        cls._encode_parts = codecs.stub("_encode_parts")
        cls.pack = staticmethod(codecs.stub("_pack"))
        cls._decode_at = staticmethod(codecs.stub("_decode_at"))
        cls.decode = staticmethod(codecs.stub("_decode"))
        cls.unpack = staticmethod(codecs.stub("_unpack"))
        cls.__new__ = _make_new(names, defaults)
        return cls


def _field_property(index: int, doc: str) -> Any:
    """The read-only attribute for field ``index``: C-level, as a NamedTuple's (a Python getter cost a call
    per attribute read, and the engines read most fields of every delivered message)."""
    try:
        from _collections import _tuplegetter  # what collections.namedtuple uses
    except ImportError:  # pragma: no cover - another implementation
        return property(operator.itemgetter(index), doc=doc)
    return _tuplegetter(index, doc)


def _make_new(names: tuple[str, ...], defaults: list[Any]) -> Any:
    """The class's ``__new__`` (generated at its first call)."""
    env: dict[str, Any] = {"_tnew": tuple.__new__}
    params = []
    for i, (n, d) in enumerate(zip(names, defaults, strict=True)):
        if d is _NO_DEFAULT:
            params.append(n)
        else:
            env[f"_d{i}"] = d
            params.append(f"{n}=_d{i}")
    body = ", ".join(names) + ("," if names else "")
    src = f"def __new__(_cls, {', '.join(params)}):\n    return _tnew(_cls, ({body}))\n"

    def build(into: dict[str, Any]) -> dict[str, Any]:
        exec(compile(src, "<message __new__>", "exec"), into)  # our own generated code
        return into

    return _Lazy(build, env).stub("__new__")


class _Lazy:
    """Generated functions compiled at the first call of any of them, not when the class is made.

    Each :meth:`stub` is a function object whose code, at its first call, is replaced by the
    generated function's (``__code__`` and defaults; the stub already runs in the generated
    code's globals), so a reference taken before (``_unpack = Msg.unpack`` on a hot path)
    calls the generated code directly afterwards.  Making a message class then costs no
    compilation: an executive loads hundreds of messages and uses few of them.
    """

    __slots__ = ("_build", "_built", "_env", "_lock", "_stubs")

    def __init__(self, build: Callable[[dict[str, Any]], dict[str, Any]], env: dict[str, Any]) -> None:
        self._build = build
        self._env = env
        env["_materialize"] = self.materialize
        self._stubs: dict[str, Any] = {}
        self._built = False
        self._lock = threading.Lock()

    def stub(self, name: str) -> Any:
        """The stand-in for generated function ``name`` (made once per name)."""
        fn = self._stubs.get(name)
        if fn is None:
            fn = self._stubs[name] = types.FunctionType(_STUB_CODE, self._env, name)
            fn.__kwdefaults__ = {"_name": name}  # the stub's own argument: which function it stands for
        return fn

    def materialize(self, name: str) -> Any:
        """Generate every function (once), give each stub its code, and return function ``name``."""
        with self._lock:
            if not self._built:
                env = self._build(self._env)
                for key, fn in self._stubs.items():
                    real = env[key]
                    fn.__code__ = real.__code__
                    fn.__defaults__ = real.__defaults__
                    fn.__kwdefaults__ = real.__kwdefaults__
                self._built = True
        return self._stubs[name]


def _stub_code() -> Any:
    def stub(*args: Any, _name: str = "", **kwargs: Any) -> Any:
        return _materialize(_name)(*args, **kwargs)  # type: ignore[name-defined]  # noqa: F821

    return stub.__code__


_STUB_CODE = _stub_code()


class Message(tuple, metaclass=_MessageMeta):
    """Base of every message definition: subclass it with field objects as class attributes."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_defs: ClassVar[tuple[Field, ...]] = ()
    _min_size: ClassVar[int] = 0
    _encode_parts: ClassVar[Callable[..., None]]
    #: ``Cls.pack(field, ...)`` encodes straight from values, without building the tuple (hot paths).
    pack: ClassVar[Callable[..., bytes]]
    #: ``Cls.unpack(buffer)`` decodes as strictly as :meth:`decode` into a plain tuple of the field
    #: values, without building the message (hot paths: ``guarantee, data = McastRequest.unpack(buf)``).
    unpack: ClassVar[Callable[[bytes | bytearray | memoryview], tuple]]
    _decode_at: ClassVar[Callable[..., tuple[Any, int]]]
    #: The :class:`struct.Struct` of a message made only of fixed-width fields (else None): a hot path
    #: may ``unpack_from`` it directly, without the enum and boolean checks of :meth:`decode`.
    fixed: ClassVar[struct.Struct | None] = None

    def encode(self) -> bytes:
        """The message on the wire."""
        return self.pack(*self)

    @classmethod
    def decode(cls, buffer: bytes | bytearray | memoryview) -> Any:
        """Decode exactly one message filling ``buffer``; raise MessageError on anything malformed.

        (Each message class replaces this with its generated decoder, which does exactly that.)
        """
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        end = len(view)
        msg, offset = cls._decode_at(view, 0, end)
        if offset != end:
            raise MessageError(cls.__name__, None, f"{end - offset} trailing bytes")
        return msg

    @classmethod
    def decode_prefix(cls, buffer: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
        """Decode one message at ``offset`` of ``buffer``; return it and the offset after it."""
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        return cls._decode_at(view, offset, len(view))

    def _replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (as NamedTuple's)."""
        values = dict(zip(self._fields, self, strict=True))
        values.update(changes)
        return type(self)(**values)

    def _asdict(self) -> dict[str, Any]:
        """Field name -> value (as NamedTuple's)."""
        return dict(zip(self._fields, self, strict=True))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self, strict=True))
        return f"{type(self).__name__}({inner})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)
