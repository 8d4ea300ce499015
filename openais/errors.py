"""SA Forum error codes (SaAisErrorT) and the exceptions that carry them."""

from __future__ import annotations

import enum


class SaAisError(enum.IntEnum):
    """SaAisErrorT with the SA Forum numeric values."""

    OK = 1
    LIBRARY = 2
    VERSION = 3
    INIT = 4
    TIMEOUT = 5
    TRY_AGAIN = 6
    INVALID_PARAM = 7
    NO_MEMORY = 8
    BAD_HANDLE = 9
    BUSY = 10
    ACCESS = 11
    NOT_EXIST = 12
    NAME_TOO_LONG = 13
    EXIST = 14
    NO_SPACE = 15
    INTERRUPT = 16
    NAME_NOT_FOUND = 17
    NO_RESOURCES = 18
    NOT_SUPPORTED = 19
    BAD_OPERATION = 20
    FAILED_OPERATION = 21
    MESSAGE_ERROR = 22
    QUEUE_FULL = 23
    QUEUE_NOT_AVAILABLE = 24
    BAD_FLAGS = 25
    TOO_BIG = 26
    NO_SECTIONS = 27


class AisError(Exception):
    """An AIS call failed; ``code`` is the :class:`SaAisError`."""

    code: SaAisError = SaAisError.LIBRARY
    _by_code: dict[int, type[AisError]] = {}

    def __init__(self, message: str = "", code: SaAisError | int | None = None) -> None:
        if code is not None:
            self.code = SaAisError(code)
        super().__init__(message or f"SA_AIS_ERR_{self.code.name}")

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        AisError._by_code.setdefault(int(cls.code), cls)

    @staticmethod
    def from_code(code: int, message: str = "") -> AisError:
        """The exception for ``code`` (an unknown code gives a plain AisError carrying LIBRARY)."""
        try:
            value = SaAisError(code)
        except ValueError:
            return AisError(message or f"unknown SaAisErrorT {code}", SaAisError.LIBRARY)
        cls = AisError._by_code.get(int(value), AisError)
        return cls(message, value) if cls is AisError else cls(message)


def _error(name: str, code: SaAisError) -> type[AisError]:
    return type(name, (AisError,), {"code": code, "__doc__": f"SA_AIS_ERR_{code.name}.", "__module__": __name__})


Library = _error("Library", SaAisError.LIBRARY)
Version = _error("Version", SaAisError.VERSION)
Init = _error("Init", SaAisError.INIT)
Timeout = _error("Timeout", SaAisError.TIMEOUT)
TryAgain = _error("TryAgain", SaAisError.TRY_AGAIN)
InvalidParam = _error("InvalidParam", SaAisError.INVALID_PARAM)
NoMemory = _error("NoMemory", SaAisError.NO_MEMORY)
BadHandle = _error("BadHandle", SaAisError.BAD_HANDLE)
Busy = _error("Busy", SaAisError.BUSY)
Access = _error("Access", SaAisError.ACCESS)
NotExist = _error("NotExist", SaAisError.NOT_EXIST)
NameTooLong = _error("NameTooLong", SaAisError.NAME_TOO_LONG)
Exist = _error("Exist", SaAisError.EXIST)
NoSpace = _error("NoSpace", SaAisError.NO_SPACE)
Interrupt = _error("Interrupt", SaAisError.INTERRUPT)
NameNotFound = _error("NameNotFound", SaAisError.NAME_NOT_FOUND)
NoResources = _error("NoResources", SaAisError.NO_RESOURCES)
NotSupported = _error("NotSupported", SaAisError.NOT_SUPPORTED)
BadOperation = _error("BadOperation", SaAisError.BAD_OPERATION)
FailedOperation = _error("FailedOperation", SaAisError.FAILED_OPERATION)
MessageError = _error("MessageError", SaAisError.MESSAGE_ERROR)
QueueFull = _error("QueueFull", SaAisError.QUEUE_FULL)
QueueNotAvailable = _error("QueueNotAvailable", SaAisError.QUEUE_NOT_AVAILABLE)
BadFlags = _error("BadFlags", SaAisError.BAD_FLAGS)
TooBig = _error("TooBig", SaAisError.TOO_BIG)
NoSections = _error("NoSections", SaAisError.NO_SECTIONS)

__all__ = [
    "Access", "AisError", "BadFlags", "BadHandle", "BadOperation", "Busy", "Exist", "FailedOperation", "Init",
    "Interrupt", "InvalidParam", "Library", "MessageError", "NameNotFound", "NameTooLong", "NoMemory",
    "NoResources", "NoSections", "NoSpace", "NotExist", "NotSupported", "QueueFull", "QueueNotAvailable",
    "SaAisError", "Timeout", "TooBig", "TryAgain", "Version",
]
