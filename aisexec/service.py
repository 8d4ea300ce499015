"""Service engines: the descriptor a plugin returns and the host that validates it.

A service plugin subclasses :class:`ServiceEngine`, fills in ``id``, ``name``,
``version`` and the two handler tables, and defines any lifecycle hook of
:class:`aisexec.hookspecs.EngineSpec` as a plain method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pluggy

from aisexec import hookspecs


class Connection(Protocol):
    """What a service sees of one library connection (implemented by the IPC server)."""

    id: int  #: never reused within one executive's life
    pid: int
    uid: int
    gid: int
    private: dict  #: per-service state, keyed by nothing but the service's own needs

    def respond(self, service: int, msg_id: int, request_id: int, error: int, payload: bytes = b"") -> None:
        """Send the answer to request ``request_id`` on the response channel."""

    def dispatch(self, service: int, msg_id: int, payload: bytes) -> None:
        """Queue a callback message on the dispatch channel (the selection object)."""

    @property
    def closed(self) -> bool:
        """True once the connection is gone; late answers are dropped."""


#: ``fn(conn, request_id, payload)``; the handler answers through ``conn.respond`` now or later.
LibFn = Callable[[Any, int, bytes], None]
#: ``fn(sender_nodeid, payload)``; runs on every node in agreed order.
ExecFn = Callable[[int, bytes], None]


@dataclass(frozen=True, slots=True)
class LibHandler:
    """One library request type of a service.

    ``needs_cluster``: the request multicasts on the ring; the IPC layer
    answers ``SA_AIS_ERR_TRY_AGAIN`` itself while sync runs or while the
    ring's pending queue has no room.  ``max_size`` caps the payload
    (``SA_AIS_ERR_TOO_BIG`` beyond, before the handler runs).

    ``pipelined``: the library sends these requests without waiting for
    each answer (a bounded window per handle).  Instead of answering
    TRY_AGAIN, the IPC layer then stops reading that connection until the
    ring has room and sync is over (back-pressure through the socket), so a
    request it accepted is never refused for lack of room.
    """

    fn: LibFn
    needs_cluster: bool = False
    max_size: int = 1024 * 1024 + 4096
    pipelined: bool = False


@dataclass(frozen=True, slots=True)
class ExecHandler:
    """One cluster message type of a service."""

    fn: ExecFn


class ExecutiveApi(Protocol):
    """What the core offers every engine (passed to ``exec_init``)."""

    nodeid: int
    config: Any  #: the validated configuration tree

    def mcast(self, service: int, msg_id: int, payload: bytes, safe: bool = False) -> None:
        """Multicast a cluster message of this service; raises ``QueueFull`` when the ring is backed up."""

    def members(self) -> tuple[int, ...]:
        """Members of the current regular configuration."""

    def quorate(self) -> bool:
        """May the current configuration act (always True without a quorum service)?"""

    def on_quorum_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(quorate)`` whenever quorum changes."""


class ServiceEngine:
    """Base class of every service engine.

    Class attributes a subclass sets:

    ``id``        unique service id (openais: EVS 0, CLM 1, AMF 2, CKPT 3,
                  EVT 4, LCK 5, MSG 6, CFG 7, CPG 8; third parties use >= 64)
    ``name``      short name used in logs (``CPG``)
    ``version``   shown in the start-up banner
    ``lib_handlers``   ``{msg_id: LibHandler}``
    ``exec_handlers``  ``{msg_id: ExecHandler}``
    """

    id: int = -1
    name: str = ""
    version: str = "0"
    lib_handlers: dict[int, LibHandler] = {}
    exec_handlers: dict[int, ExecHandler] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} name={self.name!r}>"


_ENGINE_HOOKS = frozenset(
    name for name, _ in inspect.getmembers(hookspecs.EngineSpec, inspect.isfunction) if not name.startswith("_")
)


class EngineHost(pluggy.PluginManager):
    """A plugin manager holding exactly one engine, validated against EngineSpec.

    Methods of the engine named like an EngineSpec hook are its implementations;
    no marker is needed.  pluggy checks their argument names at registration.
    """

    def __init__(self, engine: ServiceEngine) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs.EngineSpec)
        self.engine = engine
        self.register(engine, name=f"{engine.name or type(engine).__name__}")
        self.check_pending()

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        """Treat any public method named like an EngineSpec hook as its implementation."""
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in _ENGINE_HOOKS and callable(getattr(plugin, name, None)):
            return {"wrapper": False, "hookwrapper": False, "optionalhook": False,
                    "tryfirst": False, "trylast": False, "specname": None}
        return opts
