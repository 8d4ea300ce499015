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
:class:`struct.Struct`, network byte order.

The decoder rejects anything malformed with :class:`MessageError`, which names
the message and the field: a truncated frame, trailing bytes, a length or
count over its limit, an unknown enum value, invalid UTF-8.  It checks every
length and count against the bytes actually left before it slices or loops,
so it never allocates more than the frame it was given.  The encoder checks
the same limits and raises the same error (integers out of range included).

Field types
    ``U8 U16 U32 U64 I32 I64 F64 Bool``      fixed-width scalars
    ``Enum(cls, width=1|2|4)``               an IntEnum, validated on decode
    ``Bytes(max_len, min_len=0, view=False)`` u32 length + bytes
    ``Str(max_len, min_len=0)``              u16 length + UTF-8 (limits in bytes)
    ``Tail(max_len, view=False)``            the rest of the frame, no length (last field only)
    ``List(item, max_count)``                u32 count + items (a field or a Message class)
    ``Nested(cls)``                          an embedded Message
    ``Optional(field)``                      u8 presence flag + field; ``None`` when absent

``view=True`` makes ``Bytes``/``Tail`` decode to a :class:`memoryview` into the
frame instead of a copy (hot paths that forward data unchanged).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = [
    "Bool", "Bytes", "Enum", "F64", "Field", "I32", "I64", "List", "Message", "MessageError", "Nested",
    "Optional", "Str", "Tail", "U8", "U16", "U32", "U64",
]

_NO_DEFAULT = object()


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
    """A boolean (one byte, 0 or 1; anything else is rejected)."""

    code = "?"


class Enum(_Scalar):
    """An :class:`enum.IntEnum` member on ``width`` bytes; an unknown value is rejected."""

    def __init__(self, cls: type[enum.IntEnum], width: int = 1, *, default: Any = _NO_DEFAULT) -> None:
        self.code = {1: "B", 2: "H", 4: "I"}[width]
        self.enum = cls
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

    def __init__(self, field: Field, *, default: Any = None) -> None:
        super().__init__(default=default)
        self.field = field


# -- code generation ------------------------------------------------------------------------------


class _Gen:
    """Builds the source of one class's encode and decode functions."""

    def __init__(self, cls_name: str) -> None:
        self.cls_name = cls_name
        self.env: dict[str, Any] = {"MessageError": MessageError, "struct": struct, "_trunc": _trunc,
                                    "_bad": _bad, "memoryview": memoryview, "bytes": bytes, "len": len}
        self.enc: list[str] = []
        self.dec: list[str] = []
        self._n = 0

    def const(self, value: Any) -> str:
        self._n += 1
        name = f"_c{self._n}"
        self.env[name] = value
        return name

    def var(self) -> str:
        self._n += 1
        return f"_v{self._n}"


def _trunc(cls_name: str, field: str) -> MessageError:
    return MessageError(cls_name, field, "truncated")


def _bad(cls_name: str, field: str, reason: str) -> MessageError:
    return MessageError(cls_name, field, reason)


def _emit_fixed(gen: _Gen, run: list[tuple[str, Field]], ind: str) -> None:
    """One struct for a run of fixed-width fields (encode: values named by expressions)."""
    fmt = "!" + "".join(f.code for _, f in run)  # type: ignore[misc]
    s = gen.const(struct.Struct(fmt))
    names = ", ".join(expr for expr, _ in run)
    fields = ", ".join(f.name for _, f in run)
    gen.enc.append(f"{ind}try:")
    gen.enc.append(f"{ind}    _p({s}.pack({names}))")
    gen.enc.append(f"{ind}except struct.error as _e:")
    gen.enc.append(f"{ind}    raise _bad({gen.cls_name!r}, {fields!r}, str(_e)) from None")


def _emit_dec_fixed(gen: _Gen, run: list[tuple[str, Field]], ind: str) -> None:
    fmt = "!" + "".join(f.code for _, f in run)  # type: ignore[misc]
    st = struct.Struct(fmt)
    s = gen.const(st)
    targets = ", ".join(v for v, _ in run)
    gen.dec.append(f"{ind}if _o + {st.size} > _end: raise _trunc({gen.cls_name!r}, {run[0][1].name!r})")
    gen.dec.append(f"{ind}{targets}, = {s}.unpack_from(_m, _o)")
    gen.dec.append(f"{ind}_o += {st.size}")
    for v, f in run:
        if isinstance(f, Enum):
            e = gen.const(f.enum)
            gen.dec.append(f"{ind}try: {v} = {e}({v})")
            gen.dec.append(f"{ind}except ValueError: raise _bad({gen.cls_name!r}, {f.name!r}, "
                           f"f'unknown {f.enum.__name__} value {{{v}}}') from None")


def _emit_enc_var(gen: _Gen, expr: str, f: Field, ind: str) -> None:
    cn = gen.cls_name
    if isinstance(f, (Bytes, Tail)):
        n = gen.var()
        lo = getattr(f, "min_len", 0)
        gen.enc.append(f"{ind}{n} = len({expr})")
        gen.enc.append(f"{ind}if not {lo} <= {n} <= {f.max_len}: raise _bad({cn!r}, {f.name!r}, "
                       f"f'length {{{n}}} outside {lo}..{f.max_len}')")
        if isinstance(f, Bytes):
            gen.enc.append(f"{ind}_p({gen.const(struct.Struct('!I'))}.pack({n}))")
        gen.enc.append(f"{ind}_p({expr})")
    elif isinstance(f, Str):
        raw, n = gen.var(), gen.var()
        gen.enc.append(f"{ind}try: {raw} = {expr}.encode('utf-8')")
        gen.enc.append(f"{ind}except AttributeError: raise _bad({cn!r}, {f.name!r}, 'not a str') from None")
        gen.enc.append(f"{ind}{n} = len({raw})")
        gen.enc.append(f"{ind}if not {f.min_len} <= {n} <= {f.max_len}: raise _bad({cn!r}, {f.name!r}, "
                       f"f'length {{{n}}} bytes outside {f.min_len}..{f.max_len}')")
        gen.enc.append(f"{ind}_p({gen.const(struct.Struct('!I' if f.wide else '!H'))}.pack({n}))")
        gen.enc.append(f"{ind}_p({raw})")
    elif isinstance(f, List):
        n, it = gen.var(), gen.var()
        gen.enc.append(f"{ind}{n} = len({expr})")
        gen.enc.append(f"{ind}if {n} > {f.max_count}: raise _bad({cn!r}, {f.name!r}, "
                       f"f'{{{n}}} items, at most {f.max_count}')")
        gen.enc.append(f"{ind}_p({gen.const(struct.Struct('!I'))}.pack({n}))")
        item = f.item
        if isinstance(item, type) and issubclass(item, Message):
            enc = gen.const(item._encode_parts)
            gen.enc.append(f"{ind}for {it} in {expr}: {enc}({it}, _p)")
        elif item.code is not None:
            code = item.code
            gen.enc.append(f"{ind}try: _p(struct.pack(f'!{{{n}}}{code}', *{expr}))")
            gen.enc.append(f"{ind}except struct.error as _e: raise _bad({cn!r}, {f.name!r}, str(_e)) from None")
        else:
            item.name = f.name
            gen.enc.append(f"{ind}for {it} in {expr}:")
            _emit_enc_var(gen, it, item, ind + "    ")
    elif isinstance(f, Nested):
        enc = gen.const(f.cls._encode_parts)
        gen.enc.append(f"{ind}{enc}({expr}, _p)")
    elif isinstance(f, Optional):
        s = gen.const(struct.Struct("!B"))
        gen.enc.append(f"{ind}if {expr} is None: _p({s}.pack(0))")
        gen.enc.append(f"{ind}else:")
        gen.enc.append(f"{ind}    _p({s}.pack(1))")
        inner = f.field
        inner.name = f.name
        if inner.code is not None:
            _emit_fixed(gen, [(expr, inner)], ind + "    ")
        else:
            _emit_enc_var(gen, expr, inner, ind + "    ")
    else:  # pragma: no cover - every field type is handled above
        raise TypeError(f"unknown field type {type(f).__name__}")


def _emit_dec_var(gen: _Gen, target: str, f: Field, ind: str) -> None:
    cn = gen.cls_name
    d = gen.dec
    if isinstance(f, Bytes):
        n = gen.var()
        d.append(f"{ind}if _o + 4 > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{n}, = {gen.const(struct.Struct('!I'))}.unpack_from(_m, _o); _o += 4")
        d.append(f"{ind}if not {f.min_len} <= {n} <= {f.max_len}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'length {{{n}}} outside {f.min_len}..{f.max_len}')")
        d.append(f"{ind}if _o + {n} > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{target} = _m[_o:_o + {n}]" if f.view else f"{ind}{target} = bytes(_m[_o:_o + {n}])")
        d.append(f"{ind}_o += {n}")
    elif isinstance(f, Tail):
        d.append(f"{ind}if _end - _o > {f.max_len}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'length {{_end - _o}} over {f.max_len}')")
        d.append(f"{ind}{target} = _m[_o:_end]" if f.view else f"{ind}{target} = bytes(_m[_o:_end])")
        d.append(f"{ind}_o = _end")
    elif isinstance(f, Str):
        n, w = gen.var(), 4 if f.wide else 2
        d.append(f"{ind}if _o + {w} > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{n}, = {gen.const(struct.Struct('!I' if f.wide else '!H'))}.unpack_from(_m, _o); _o += {w}")
        d.append(f"{ind}if not {f.min_len} <= {n} <= {f.max_len}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'length {{{n}}} bytes outside {f.min_len}..{f.max_len}')")
        d.append(f"{ind}if _o + {n} > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}try: {target} = bytes(_m[_o:_o + {n}]).decode('utf-8')")
        d.append(f"{ind}except UnicodeDecodeError: raise _bad({cn!r}, {f.name!r}, 'not UTF-8') from None")
        d.append(f"{ind}_o += {n}")
    elif isinstance(f, List):
        n, acc, it = gen.var(), gen.var(), gen.var()
        item = f.item
        is_msg = isinstance(item, type) and issubclass(item, Message)
        min_item = max(1, item._min_size if is_msg else item.min_size)
        d.append(f"{ind}if _o + 4 > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}{n}, = {gen.const(struct.Struct('!I'))}.unpack_from(_m, _o); _o += 4")
        d.append(f"{ind}if {n} > {f.max_count}: raise _bad({cn!r}, {f.name!r}, "
                 f"f'{{{n}}} items, at most {f.max_count}')")
        d.append(f"{ind}if {n} * {min_item} > _end - _o: raise _trunc({cn!r}, {f.name!r})")
        if is_msg:
            dec = gen.const(item._decode_at)
            d.append(f"{ind}{acc} = []")
            d.append(f"{ind}for {it} in range({n}):")
            d.append(f"{ind}    _x, _o = {dec}(_m, _o, _end)")
            d.append(f"{ind}    {acc}.append(_x)")
        elif item.code is not None:
            size = struct.calcsize("!" + item.code)
            d.append(f"{ind}{acc} = list(struct.unpack_from(f'!{{{n}}}{item.code}', _m, _o)); _o += {n} * {size}")
            if isinstance(item, Enum):
                e = gen.const(item.enum)
                d.append(f"{ind}try: {acc} = [{e}(_x) for _x in {acc}]")
                d.append(f"{ind}except ValueError as _e: raise _bad({cn!r}, {f.name!r}, str(_e)) from None")
        else:
            item.name = f.name
            d.append(f"{ind}{acc} = []")
            d.append(f"{ind}for {it} in range({n}):")
            _emit_dec_var(gen, "_x", item, ind + "    ")
            d.append(f"{ind}    {acc}.append(_x)")
        d.append(f"{ind}{target} = {acc}")
    elif isinstance(f, Nested):
        dec = gen.const(f.cls._decode_at)
        d.append(f"{ind}{target}, _o = {dec}(_m, _o, _end)")
    elif isinstance(f, Optional):
        d.append(f"{ind}if _o + 1 > _end: raise _trunc({cn!r}, {f.name!r})")
        d.append(f"{ind}_flag = _m[_o]; _o += 1")
        d.append(f"{ind}if _flag == 0: {target} = None")
        d.append(f"{ind}elif _flag == 1:")
        inner = f.field
        inner.name = f.name
        if inner.code is not None:
            _emit_dec_fixed(gen, [(target, inner)], ind + "    ")
        else:
            _emit_dec_var(gen, target, inner, ind + "    ")
        d.append(f"{ind}else: raise _bad({cn!r}, {f.name!r}, f'presence flag {{_flag}}')")
    else:  # pragma: no cover
        raise TypeError(f"unknown field type {type(f).__name__}")


def _build(cls_name: str, fields: list[Field]) -> dict[str, Any]:
    gen = _Gen(cls_name)
    # encode: _encode_parts(self, _p) appends byte strings through _p
    gen.enc.append("def _encode_parts(self, _p):")
    names = [f.name for f in fields]
    if names:
        gen.enc.append(f"    {', '.join(names)}, = self")
    # decode: _decode_at(_m, _o, _end) -> (instance, offset)
    gen.dec.append("def _decode_at(_m, _o, _end):")
    run_e: list[tuple[str, Field]] = []
    run_d: list[tuple[str, Field]] = []
    targets = []
    for i, f in enumerate(fields):
        if isinstance(f, Tail) and i != len(fields) - 1:
            raise TypeError(f"{cls_name}.{f.name}: Tail must be the last field")
        t = f"_f{i}"
        targets.append(t)
        if f.code is not None:
            run_e.append((f.name, f))
            run_d.append((t, f))
            continue
        if run_e:
            _emit_fixed(gen, run_e, "    ")
            _emit_dec_fixed(gen, run_d, "    ")
            run_e, run_d = [], []
        _emit_enc_var(gen, f.name, f, "    ")
        _emit_dec_var(gen, t, f, "    ")
    if run_e:
        _emit_fixed(gen, run_e, "    ")
        _emit_dec_fixed(gen, run_d, "    ")
    gen.enc.append("    return None")
    body = gen.enc[2 if names else 1:-1]
    gen.enc.append("")
    gen.enc.append(f"def _pack({', '.join(names)}):")
    gen.enc.append("    _l = []")
    gen.enc.append("    _p = _l.append")
    gen.enc.extend(body)
    gen.enc.append("    return b''.join(_l)")
    gen.dec.append(f"    return _new(_cls, ({', '.join(targets)}{',' if targets else ''})), _o")
    source = "\n".join(gen.enc) + "\n\n" + "\n".join(gen.dec) + "\n"
    env = gen.env
    env["_new"] = tuple.__new__
    exec(compile(source, f"<message {cls_name}>", "exec"), env)  # noqa: S102 - our own generated code
    return env


class _MessageMeta(type):
    """Turns a class body of fields into a tuple class with generated encode/decode."""

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> type:
        if not any(isinstance(b, _MessageMeta) for b in bases):
            return super().__new__(mcs, name, bases, ns)
        for key, value in list(ns.items()):
            if isinstance(value, Field):
                value.name = key
        fields = sorted((v for v in ns.values() if isinstance(v, Field)), key=lambda f: f.order)
        for f in fields:
            del ns[f.name]
        names = tuple(f.name for f in fields)
        defaults = [f.default for f in fields]
        seen_default = False
        for f, d in zip(fields, defaults):
            if d is not _NO_DEFAULT:
                seen_default = True
            elif seen_default:
                raise TypeError(f"{name}.{f.name}: a field without a default follows one with a default")
        ns["__slots__"] = ()
        ns["_fields"] = names
        ns["_field_defs"] = tuple(fields)
        ns["_min_size"] = sum(f.min_size for f in fields)
        for index, fname in enumerate(names):
            ns[fname] = property(_getter(index), doc=f"Field {index}: {fname}")
        cls = super().__new__(mcs, name, bases, ns)
        env = _build(name, fields)
        env["_cls"] = cls
        cls._encode_parts = env["_encode_parts"]
        cls.pack = staticmethod(env["_pack"])
        cls._decode_at = staticmethod(env["_decode_at"])
        cls.__new__ = _make_new(names, defaults)
        return cls


def _getter(index: int) -> Callable[[Any], Any]:
    def get(self: tuple) -> Any:
        return tuple.__getitem__(self, index)

    return get


def _make_new(names: tuple[str, ...], defaults: list[Any]) -> Any:
    params = []
    env: dict[str, Any] = {"_tnew": tuple.__new__}
    for i, (n, d) in enumerate(zip(names, defaults)):
        if d is _NO_DEFAULT:
            params.append(n)
        else:
            env[f"_d{i}"] = d
            params.append(f"{n}=_d{i}")
    body = ", ".join(names) + ("," if names else "")
    src = f"def __new__(_cls, {', '.join(params)}):\n    return _tnew(_cls, ({body}))\n"
    exec(src, env)  # noqa: S102 - our own generated code
    return env["__new__"]


class Message(tuple, metaclass=_MessageMeta):
    """Base of every message definition: subclass it with field objects as class attributes."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_defs: ClassVar[tuple[Field, ...]] = ()
    _min_size: ClassVar[int] = 0
    _encode_parts: ClassVar[Callable[..., None]]
    #: ``Cls.pack(field, ...)`` encodes straight from values, without building the tuple (hot paths).
    pack: ClassVar[Callable[..., bytes]]
    _decode_at: ClassVar[Callable[..., tuple[Any, int]]]

    def encode(self) -> bytes:
        """The message on the wire."""
        return self.pack(*self)

    @classmethod
    def decode(cls, buffer: bytes | bytearray | memoryview) -> Any:
        """Decode exactly one message filling ``buffer``; raise MessageError on anything malformed."""
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
        values = dict(zip(self._fields, self))
        values.update(changes)
        return type(self)(**values)

    def _asdict(self) -> dict[str, Any]:
        """Field name -> value (as NamedTuple's)."""
        return dict(zip(self._fields, self))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self))
        return f"{type(self).__name__}({inner})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)
