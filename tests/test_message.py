"""The declarative message layer: every field type round-trips; anything malformed raises MessageError."""

from __future__ import annotations

import enum
import struct
import tracemalloc

import pytest

from openais.message import (
    F64,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    Bytes,
    Enum,
    Field,
    List,
    Message,
    MessageError,
    Nested,
    Optional,
    Str,
    Tail,
    head_struct,
)


class Color(enum.IntEnum):
    """A small enum for the tests."""

    RED = 1
    GREEN = 2
    BLUE = 300


class Point(Message):
    """A nested message."""

    x = I32()
    y = I32()


class Everything(Message):
    """One field of every type."""

    u8 = U8()
    u16 = U16()
    u32 = U32()
    u64 = U64()
    i32 = I32()
    i64 = I64()
    f64 = F64()
    flag = Bool()
    color = Enum(Color, width=2)
    blob = Bytes(max_len=16, min_len=1)
    name = Str(max_len=8, min_len=1)
    wide = Str(max_len=70000)
    numbers = List(U32(), max_count=4)
    colors = List(Enum(Color, width=2), max_count=4)
    flags = List(Bool(), max_count=4)
    names = List(Str(max_len=4), max_count=3)
    points = List(Point, max_count=3)
    origin = Nested(Point)
    maybe = Optional(U16())
    maybe_text = Optional(Str(max_len=4))
    rest = Tail(max_len=32)


SAMPLE = Everything(
    u8=255, u16=65535, u32=2**32 - 1, u64=2**64 - 1, i32=-(2**31), i64=-(2**63), f64=1.5, flag=True,
    color=Color.BLUE, blob=b"\x00\xff", name="héllo", wide="w" * 66000, numbers=[1, 2, 3], colors=[Color.RED],
    flags=[True, False], names=["a", "bc"], points=[Point(1, -1), Point(2, -2)], origin=Point(0, 7), maybe=9,
    maybe_text=None, rest=b"tail bytes",
)


class Small(Message):
    """A message for the error cases."""

    kind = Enum(Color)
    count = U16()
    name = Str(max_len=4, min_len=1)
    items = List(U32(), max_count=1000)


def _small(**changes: object) -> bytes:
    return Small(Color.RED, 1, "ab", [5])._replace(**changes).encode()


def test_every_field_type_round_trips():
    frame = SAMPLE.encode()
    assert Everything.pack(*SAMPLE) == frame
    back = Everything.decode(frame)
    assert back == SAMPLE
    assert back.color is Color.BLUE and back.colors == [Color.RED] and back.flag is True
    assert back.points[1].y == -2 and isinstance(back.origin, Point)
    assert back.maybe == 9 and back.maybe_text is None and back.rest == b"tail bytes"
    assert Everything.decode(bytearray(frame)) == SAMPLE
    assert Everything.decode(memoryview(frame)) == SAMPLE
    other = SAMPLE._replace(maybe=None, maybe_text="abcd", rest=b"", flags=[], points=[])
    assert Everything.decode(other.encode()) == other


def test_the_tuple_behaves_like_a_named_tuple():
    p = Point(1, 2)
    assert p == (1, 2) and p.x == 1 and p._fields == ("x", "y")
    assert p._asdict() == {"x": 1, "y": 2} and p._replace(y=5) == Point(1, 5)
    assert repr(p) == "Point(x=1, y=2)"
    assert Point.fixed is not None and Point.fixed.size == 8 and Everything.fixed is None
    with pytest.raises(AttributeError):
        p.x = 3  # type: ignore[misc]


def test_views_and_prefix_decoding():
    class Fwd(Message):
        head = Bytes(max_len=8, view=True)
        data = Tail(max_len=64, view=True)

    frame = Fwd.pack(b"ab", memoryview(b"payload"))
    msg = Fwd.decode(frame)
    assert isinstance(msg.head, memoryview) and isinstance(msg.data, memoryview)
    assert (bytes(msg.head), bytes(msg.data)) == (b"ab", b"payload")
    two = Point(1, 2).encode() + Point(3, 4).encode()
    first, offset = Point.decode_prefix(two)
    assert first == (1, 2) and Point.decode_prefix(two, offset) == ((3, 4), 16)


def test_subclasses_extend_the_layout_and_defaults_work():
    class Base(Message):
        a = U8()

    class Derived(Base):
        b = U16(default=7)

    class Same(Base):
        pass

    assert Derived._fields == ("a", "b") and Derived(1) == (1, 7)
    assert Derived.decode(Derived(1, 2).encode()) == (1, 2)
    assert Same.decode(b"\x05") == (5,) and type(Same.decode(b"\x05")) is Same
    with pytest.raises(TypeError, match="follows one with a default"):
        class Bad(Message):
            a = U8(default=1)
            b = U8()
    with pytest.raises(TypeError, match="last field"):
        class BadTail(Message):
            t = Tail(max_len=4)
            b = U8()


def _error(decode, payload) -> MessageError:
    with pytest.raises(MessageError) as info:
        decode(payload)
    return info.value


@pytest.mark.parametrize(("payload", "field", "reason"), [
    (b"", "kind", "truncated"),
    (b"\x01\x00", "count", "truncated"),
    (b"\x01\x00\x01", "name", "truncated"),
    (b"\x01\x00\x01\x00\x02a", "name", "truncated"),
    (b"\x09\x00\x01\x00\x02ab\x00\x00\x00\x00", "kind", "unknown Color value 9"),
    (b"\x01\x00\x01\x00\x00\x00\x00\x00\x00", "name", "outside 1..4"),
    (b"\x01\x00\x01\x00\x05abcde\x00\x00\x00\x00", "name", "outside 1..4"),
    (b"\x01\x00\x01\x00\x02\xff\xfe\x00\x00\x00\x00", "name", "not UTF-8"),
    (b"\x01\x00\x01\x00\x02ab\x00\x00\x03\xe9", "items", "1001 items, at most 1000"),
    (b"\x01\x00\x01\x00\x02ab\x00\x00\x00\x02\x00\x00\x00\x01", "items", "truncated"),
])
def test_malformed_frames_name_message_and_field(payload, field, reason):
    exc = _error(Small.decode, payload)
    assert (exc.message_name, exc.field) == ("Small", field)
    assert reason in exc.reason and str(exc).startswith(f"Small.{field}: ")


def test_trailing_bytes_bad_flags_bad_booleans():
    exc = _error(Small.decode, _small() + b"\0")
    assert (exc.message_name, exc.field, exc.reason) == ("Small", None, "1 trailing bytes")
    frame = SAMPLE._replace(maybe=None, maybe_text=None, rest=b"").encode()
    # the presence flag of ``maybe`` sits after ``origin``: find it by encoding the prefix
    prefix = len(frame) - 2  # two flags (0, 0) and an empty tail end the frame
    assert frame[prefix:] == b"\0\0"
    assert _error(Everything.decode, frame[:prefix] + b"\x02\x00").field == "maybe"
    assert _error(Everything.decode, frame[:prefix] + b"\x00\x07").field == "maybe_text"
    assert _error(Everything.decode, frame[:prefix]).field == "maybe"

    class Flags(Message):
        on = Bool()
        many = List(Bool(), max_count=2)

    assert Flags.decode(b"\x01\x00\x00\x00\x02\x00\x01") == (True, [False, True])
    assert _error(Flags.decode, b"\x02\x00\x00\x00\x00").field == "on"
    assert _error(Flags.decode, b"\x00\x00\x00\x00\x01\x05").field == "many"

    class Colors(Message):
        c = List(Enum(Color, width=2), max_count=2)

    assert _error(Colors.decode, b"\x00\x00\x00\x01\x00\x07").reason == "unknown Color value 7"


def test_tail_and_bytes_limits_on_decode():
    class Frame(Message):
        blob = Bytes(max_len=3, min_len=1)
        rest = Tail(max_len=2)

    assert Frame.decode(b"\x00\x00\x00\x01x12") == (b"x", b"12")
    assert _error(Frame.decode, b"\x00\x00\x00\x01x123").field == "rest"
    assert _error(Frame.decode, b"\x00\x00\x00\x04abcd").field == "blob"
    assert _error(Frame.decode, b"\x00\x00\x00\x00").field == "blob"
    assert _error(Frame.decode, b"\x00\x00\x00\x03ab").reason == "truncated"


def test_a_huge_declared_count_in_a_tiny_frame_is_rejected_without_allocating():
    class Many(Message):
        items = List(U64(), max_count=2**32 - 1)
        blobs = List(Bytes(max_len=2**31), max_count=2**32 - 1)

    assert Many.decode(b"\0" * 8) == Many([], [])  # the decoder is generated at its first use: not traced
    tracemalloc.start()
    try:
        frames = (b"\xff\xff\xff\xff" + b"\0" * 8, b"\0\0\0\0\xff\xff\xff\xff", b"\0\0\0\0\0\0\0\1\x7f\xff\xff\xff")
        for frame in frames:
            assert _error(Many.decode, frame).reason == "truncated"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_encode_rejects_over_limit_values_and_out_of_range_ints():
    def enc_error(**changes: object) -> MessageError:
        with pytest.raises(MessageError) as info:
            _small(**changes)
        return info.value

    assert enc_error(name="").field == "name"
    assert enc_error(name="abcde").field == "name"
    assert enc_error(name="éé€").field == "name"  # 7 bytes of UTF-8
    assert enc_error(name=b"ab").field == "name"
    assert enc_error(items=list(range(1001))).field == "items"
    assert enc_error(kind=7).field == "kind"
    assert enc_error(count=65536).field == "count"
    assert enc_error(count=-1).field == "count"
    assert enc_error(count="1").field == "count"
    assert enc_error(items=[2**32]).field == "items"
    with pytest.raises(MessageError) as info:
        Everything.pack(*SAMPLE._replace(blob=b""))
    assert info.value.field == "blob"
    for change, field in [({"blob": "str"}, "blob"), ({"rest": b"x" * 33}, "rest"), ({"i32": 2**31}, "i32"),
                          ({"u8": 256}, "u8"), ({"points": [(1,)]}, "points"), ({"origin": (1, 2, 3)}, "origin"),
                          ({"maybe": 70000}, "maybe"), ({"names": ["abcde"]}, "names"),
                          ({"colors": [4]}, "colors"), ({"wide": "w" * 70001}, "wide")]:
        with pytest.raises(MessageError) as info:
            SAMPLE._replace(**change).encode()
        assert (info.value.message_name, info.value.field) == ("Everything", field), change


def test_an_error_inside_a_nested_message_names_the_path_from_the_outer_one():
    class Inner(Message):
        color = Enum(Color)

    class Outer(Message):
        inner = Nested(Inner)

    class Many(Message):
        inners = List(Inner, max_count=4)

    with pytest.raises(MessageError) as info:
        Outer((9,)).encode()
    assert (info.value.message_name, info.value.field) == ("Outer", "inner.color")
    with pytest.raises(MessageError) as info:
        Many([(1,), (9,)]).encode()
    assert (info.value.message_name, info.value.field) == ("Many", "inners.color")
    exc = _error(Outer.decode, b"\x09")
    assert (exc.message_name, exc.field, exc.reason) == ("Outer", "inner.color", "unknown Color value 9")
    assert _error(Many.decode, b"\0\0\0\x02\x01\x09").field == "inners[1].color"
    assert _error(Many.decode, b"\0\0\0\x02\x01").field == "inners"  # the count does not fit: truncated


def test_enum_values_narrow_what_a_field_admits():
    class Leave(Message):
        reason = Enum(Color, values=(Color.RED, Color.BLUE), width=2)

    assert Leave.decode(Leave(Color.BLUE).encode()) == (Color.BLUE,)
    with pytest.raises(MessageError):
        Leave(Color.GREEN).encode()
    assert _error(Leave.decode, struct.pack("!H", Color.GREEN)).field == "reason"


def test_empty_message():
    class Empty(Message):
        pass

    assert Empty().encode() == b"" and Empty.decode(b"") == ()
    assert _error(Empty.decode, b"x").reason == "1 trailing bytes"


def test_an_optional_defaults_to_none_only_when_no_required_field_follows():
    class End(Message):
        a = U8()
        b = Optional(U8())

    class Middle(Message):
        a = Optional(U8())
        data = Tail(max_len=4)

    assert End(1) == (1, None)
    with pytest.raises(TypeError):
        Middle(data=b"x")  # type: ignore[call-arg]
    assert Middle.decode(Middle(None, b"x").encode()) == (None, b"x")


def test_unpack_is_as_strict_as_decode_and_returns_a_plain_tuple():
    frame = SAMPLE.encode()
    values = Everything.unpack(frame)
    assert type(values) is tuple and values == tuple(SAMPLE)
    assert _error(Everything.unpack, frame[:-20]).field == "origin.x"
    assert _error(Everything.unpack, frame + b"x" * 30).field == "rest"  # the tail over its limit
    assert _error(Small.unpack, b"").field == "kind"
    assert _error(Small.unpack, b"\x09\x00\x01\x00\x02ab\x00\x00\x00\x00").reason == "unknown Color value 9"
    assert _error(Small.unpack, _small() + b"\0").reason == "1 trailing bytes"
    assert Point.unpack(b"\0\0\0\1\xff\xff\xff\xff") == (1, -1)


def test_the_example_in_docs_services_runs():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "services.md").read_text()
    section = doc.split("## Defining messages", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/services.md", "exec"), {"__name__": "docs_example"})


def test_codecs_are_generated_at_first_use_and_references_taken_before_run_them():
    from openais import message as m

    class Lazy(Message):
        a = U32()
        b = Str(max_len=8)

    unpack, pack = Lazy.unpack, Lazy.pack  # as a hot path takes them at import time
    assert unpack.__code__ is m._STUB_CODE and Lazy.__new__.__code__ is m._STUB_CODE  # nothing compiled yet
    assert unpack(pack(7, "x")) == (7, "x")
    assert pack.__code__ is not m._STUB_CODE and Lazy.decode.__code__ is not m._STUB_CODE  # all five at once
    assert unpack is Lazy.unpack  # the same function object, now running the generated code
    assert Lazy(1, "y").encode() == pack(1, "y") and Lazy.decode(pack(1, "y")) == Lazy(a=1, b="y")
    with pytest.raises(MessageError) as info:
        unpack(b"\0\0\0\1\0\x09" + b"z" * 9)
    assert (info.value.message_name, info.value.field) == ("Lazy", "b")


def test_many_threads_using_a_fresh_class_at_once_generate_it_once():
    import threading

    class Fresh(Message):
        n = U64()
        data = Bytes(max_len=64)

    results: list[tuple] = []
    start = threading.Barrier(8)

    def use(i: int) -> None:
        start.wait()
        results.append(Fresh.unpack(Fresh.pack(i, bytes([i]) * i)))

    threads = [threading.Thread(target=use, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(i, bytes([i]) * i) for i in range(8)]


def test_a_layout_no_code_can_be_made_for_is_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="Tail must be the last field"):
        class TailFirst(Message):
            rest = Tail(max_len=8)
            after = U8()

    class Odd(Field):
        pass

    with pytest.raises(TypeError, match="unknown field type Odd"):
        class Unknown(Message):
            x = List(Odd(), max_count=2)


class _Headed(Message):
    """Fixed head, then a name and the data."""

    conn = U64()
    seq = U32()
    prio = U8()
    name = Str(max_len=16)
    data = Tail(max_len=64)


class Color3(Message):
    """Fixed fields only."""

    r = U8()
    g = U8()


def test_head_struct_reads_the_fixed_head_as_the_strict_decoder_does():
    encoded = _Headed.pack(7, 9, 3, "n", b"data")
    head = head_struct(_Headed)
    assert head.format == "!QIB" and head.unpack_from(encoded) == tuple(_Headed.unpack(encoded))[:3]
    assert head_struct(_Headed, stop="prio").format == "!QI"
    with pytest.raises(TypeError, match="no field"):
        head_struct(Color3, stop="missing")
    with pytest.raises(TypeError, match="variable field 'name' comes before 'data'"):
        head_struct(_Headed, stop="data")


def test_head_struct_refuses_fields_the_strict_decoder_checks():
    class Checked(Message):
        flag = Bool()
        rest = Tail(max_len=8)

    with pytest.raises(TypeError, match="checked field"):
        head_struct(Checked)
