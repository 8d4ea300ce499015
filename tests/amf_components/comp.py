"""A small SA-aware component AMF starts in tests: registers, answers every callback, logs events.

Events are JSON lines appended to ``$AMF_TEST_EVENTS`` (one ``write`` per line).
``$AMF_TEST_HC`` = ``amf``/``component`` starts the ``alive`` health check;
while the file ``$AMF_TEST_EVENTS.hang.<pid>`` exists the component stops answering
health checks; ``$AMF_TEST_PM`` = ``self`` makes it passively monitor itself, ``child`` a ``sleep`` child it starts.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

import openais
from openais import amf

EVENTS = os.environ.get("AMF_TEST_EVENTS", "")
NAME = os.environ.get("SA_AMF_COMPONENT_NAME", "?")


def log(event: str, **fields: object) -> None:
    """Append one event line."""
    if not EVENTS:
        return
    line = json.dumps({"t": time.time(), "comp": NAME, "pid": os.getpid(), "event": event, **fields}) + "\n"
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def main() -> int:
    """Run the component until terminated or its executive is gone."""
    handle: list[amf.AmfHandle] = []
    children: list = []

    def csi_set(inv, comp, ha, desc):
        h = handle[0]
        h.response(inv)
        state = desc.csi_state_descriptor
        log("csi_set", ha=ha.name, csi=desc.csi_name, flags=desc.csi_flags,
            transition=getattr(state, "transition_descriptor", None) and state.transition_descriptor.name,
            other=getattr(state, "active_comp_name", None), attrs=[list(a) for a in desc.csi_attr])
        if ha == amf.HAState.QUIESCING:
            h.csi_quiescing_complete(inv)

    def csi_remove(inv, comp, csi, flags):
        handle[0].response(inv)
        log("csi_remove", csi=csi, flags=flags)

    def terminate(inv, comp):
        handle[0].response(inv)
        log("terminate")
        os._exit(0)

    def healthcheck(inv, comp, key):
        if os.path.exists(f"{EVENTS}.hang.{os.getpid()}"):
            return
        handle[0].response(inv)

    h = amf.initialize(csi_set=csi_set, csi_remove=csi_remove, component_terminate=terminate,
                       healthcheck=healthcheck)
    handle.append(h)
    me = h.component_name_get()
    for _ in range(200):
        try:
            h.component_register(me)
            break
        except openais.TryAgain:  # AMF is syncing a membership change: retry, as the contract says
            time.sleep(0.05)
    with open("/proc/self/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])  # starttime, clock ticks since boot
    log("registered", env=sorted(k for k in os.environ if k != "PWD"), start=start)
    hc = os.environ.get("AMF_TEST_HC")
    if hc == "amf":
        h.healthcheck_start(me, b"alive", amf.HealthcheckInvocation.AMF_INVOKED,
                            amf.RecommendedRecovery.NO_RECOMMENDATION)
    elif hc == "component":
        h.healthcheck_start(me, b"alive", amf.HealthcheckInvocation.COMPONENT_INVOKED,
                            amf.RecommendedRecovery.NO_RECOMMENDATION)
    if os.environ.get("AMF_TEST_PM") == "self":
        h.pm_start(me, os.getpid(), 0, amf.PM_ALL_ERRORS, amf.RecommendedRecovery.NO_RECOMMENDATION)
    elif os.environ.get("AMF_TEST_PM") == "child":
        import ctypes
        import subprocess

        def die_with_parent() -> None:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL

        child = subprocess.Popen(["/bin/sleep", "3600"], preexec_fn=die_with_parent)
        children.append(child)
        h.pm_start(me, child.pid, 0, amf.PM_ABNORMAL_END, amf.RecommendedRecovery.COMPONENT_FAILOVER)
        log("pm_child", child=child.pid)
    last = 0.0
    try:
        while True:
            if select.select([h.fileno()], [], [], 0.2)[0]:
                h.dispatch(openais.DISPATCH_ALL)
            if hc == "component" and time.time() - last > 0.2 and not os.path.exists(f"{EVENTS}.hang.{os.getpid()}"):
                h.healthcheck_confirm(me, b"alive")
                last = time.time()
    except openais.Library:
        return 0
    finally:
        for child in children:  # nothing of a test component outlives it
            child.kill()


if __name__ == "__main__":
    sys.exit(main())
