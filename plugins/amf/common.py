"""Constants and small helpers shared by the parts of AMF's replicated state."""

from __future__ import annotations

import logging

from openais.amf import PresenceState as Pres
from openais.errors import SaAisError

log = logging.getLogger("aisexec.amf")


class _Done:
    """A life-cycle result decided inside the state (proxied components), shaped like LcDone."""

    def __init__(self, comp: str, epoch: int, what: str, ok: int) -> None:
        self.comp, self.epoch, self.what, self.ok = comp, epoch, what, ok

CSI_ADD_ONE, CSI_TARGET_ONE, CSI_TARGET_ALL = 1, 2, 4
NEW_ASSIGN, T_QUIESCED, NOT_QUIESCED, STILL_ACTIVE = 1, 2, 3, 4
REC_NONE, REC_COMP_RESTART, REC_COMP_FAILOVER, REC_NODE_SWITCHOVER = 1, 2, 3, 4
REC_NODE_FAILOVER, REC_NODE_FAILFAST, REC_CLUSTER_RESET, REC_APP_RESTART = 5, 6, 7, 8
_OK = int(SaAisError.OK)
_MS = 1_000_000
#: Phases in which a component is being cleaned up or terminated (or waits for its turn to be).
BUSY_PHASES = ("clean", "term", "clean_wait")
_FAILED = (int(Pres.INSTANTIATION_FAILED), int(Pres.TERMINATION_FAILED))
