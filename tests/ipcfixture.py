"""Run an IpcServer with test engines in a gevent hub on a background thread."""

from __future__ import annotations

import threading
from pathlib import Path

import gevent
import gevent.event

from aisexec.ipc.auth import Authorizer
from aisexec.ipc.server import IpcServer
from aisexec.service import EngineHost, ServiceEngine


class TestRouter:
    """Engines by id; cluster readiness and room switchable by the test."""

    def __init__(self, engines: list[ServiceEngine]) -> None:
        self.engines = {e.id: (e, EngineHost(e)) for e in engines}
        self.ready = True
        self.room = True

    def engine_for(self, service_id):
        return self.engines.get(service_id)

    def cluster_ready(self, service_id=None):
        return self.ready

    def has_room(self, size):
        return self.room


class ServerThread:
    """An IpcServer running in its own thread's gevent hub."""

    def __init__(self, path: Path, engines: list[ServiceEngine], authorizer: Authorizer | None = None,
                 **options) -> None:
        self.path = str(path)
        self.router = TestRouter(engines)
        self.authorizer = authorizer or Authorizer()
        self.options = options
        self.server: IpcServer | None = None
        self._started = threading.Event()
        self._stop = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("IPC server did not start")

    def _run(self) -> None:
        self._hub = gevent.get_hub()
        self._stop = gevent.event.Event()
        self.server = IpcServer(self.path, self.router, self.authorizer, **self.options)
        self.server.start()
        self._started.set()
        self._stop.wait()
        self.server.stop()
        gevent.sleep(0.05)

    def _loop_call(self, fn) -> None:
        self._hub.loop.run_callback_threadsafe(fn)

    def room_available(self) -> None:
        """Tell the server, in its own hub, that the ring has room (as the executive's on_room does)."""
        self._loop_call(self.server.room_available)

    def stop(self) -> None:
        self._loop_call(self._stop.set)
        self._thread.join(10)
