"""The five redundancy models: which SU should hold which SI in which HA state, from the current state.

:func:`desired` is a pure function of the model, the current acknowledged
assignments and which SUs may keep or take work.  It keeps what is held
wherever the model allows (no fail-back), promotes standbys when an active
is gone, and fills the rest by rank and preferred counts (contract §2.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from plugins.amf.model import SG, Comp, Model

ACTIVE, STANDBY, QUIESCED, QUIESCING = 1, 2, 3, 4
_EXCLUSIVE = ("x_active_or_y_standby", "one_active_or_y_standby", "one_active_or_one_standby")

Key = tuple[str, str]  # (su, si)


@dataclass
class View:
    """What the planner sees of one SG."""

    cur: dict[Key, int]  # acknowledged SU-level HA state per (su, si)
    standby_rank: dict[Key, int]
    keep: Callable[[str], bool]  # may keep the work it holds
    eligible: Callable[[str], bool]  # may take new work
    assignable: Callable[[str], bool]  # the SI may be assigned (unlocked, dependencies active)
    swap: set[str] = field(default_factory=set)  # SIs with a pending si-swap


class _Load:
    """Planned assignments per component, to respect capabilities and limits."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.count: dict[str, list[int]] = {}

    def _room(self, comp: Comp, ha: int) -> bool:
        a, s = self.count.get(comp.dn, [0, 0])
        if ha == ACTIVE:
            if comp.max_active and a >= comp.max_active:
                return False
            return not (comp.capability in _EXCLUSIVE and s)
        if comp.max_standby < 0 or (comp.max_standby and s >= comp.max_standby):
            return False
        if comp.capability == "one_active_or_one_standby" and (a or s):
            return False
        return not (comp.capability in _EXCLUSIVE and a)

    def fits(self, su: str, si: str, ha: int) -> bool:
        """True (and recorded) when every CSI of ``si`` finds a component of ``su`` with room for ``ha``."""
        m = self.model
        chosen: list[str] = []
        trial = {k: list(v) for k, v in self.count.items()}
        for csi in m.sis[si].csis:
            t = m.csis[csi].cs_type
            for dn in m.sus[su].comps:
                comp = m.comps[dn]
                if t not in comp.cs_types:
                    continue
                saved, self.count = self.count, trial
                ok = self._room(comp, ha)
                self.count = saved
                if ok:
                    trial.setdefault(dn, [0, 0])[0 if ha == ACTIVE else 1] += 1
                    chosen.append(dn)
                    break
            else:
                return False
        self.count = trial
        return True


def _order(model: Model, sg: SG, si: str) -> list[str]:
    """SUs in the SI's preference order: its ranked SUs, then SU rank order."""
    ranked = [u for u in model.sis[si].ranked_sus if u in sg.sus]
    return ranked + [u for u in sg.sus if u not in ranked]


def desired(model: Model, sg: SG, view: View) -> dict[Key, tuple[int, int]]:
    """(su, si) -> (HA state, standby rank) the model wants now."""
    sis = [s for s in sg.sis if view.assignable(s)]
    fn = {"2n": _two_n, "nplusm": _n_plus_m, "nway": _n_way, "nwayactive": _n_way_active,
          "noredundancy": _no_redundancy}[sg.model]
    return fn(model, sg, view, sis)


def _holders(view: View, si: str, ha: int) -> list[str]:
    return [u for (u, s), h in view.cur.items() if s == si and h == ha]


def _two_n(model: Model, sg: SG, view: View, sis: list[str]) -> dict[Key, tuple[int, int]]:
    held_active = [u for u in sg.sus if any(view.cur.get((u, s)) in (ACTIVE, QUIESCING) for s in sg.sis)]
    held_standby = [u for u in sg.sus if any(view.cur.get((u, s)) == STANDBY for s in sg.sis)]
    act = next((u for u in held_active if view.keep(u)), None)
    std = next((u for u in held_standby if view.keep(u) and u != act), None)
    if view.swap and act is not None and std is not None:
        act, std = std, act
    if act is None:
        act, std = std, None
    if act is None:
        act = next((u for u in sg.sus if view.eligible(u)), None)
    if std is None:
        std = next((u for u in sg.sus if view.eligible(u) and u != act), None)
    out: dict[Key, tuple[int, int]] = {}
    load = _Load(model)
    for s in sis:
        if act is not None and load.fits(act, s, ACTIVE):
            out[(act, s)] = (ACTIVE, 0)
            if std is not None and load.fits(std, s, STANDBY):
                out[(std, s)] = (STANDBY, 1)
    return out


def _pick(cands: list[str], counts: dict[str, int], limit: int) -> list[str]:
    """Candidates with room under ``limit`` (0: none), fewest assignments first, then preference order."""
    ok = [u for u in cands if not limit or counts.get(u, 0) < limit]
    return sorted(ok, key=lambda u: (counts.get(u, 0), cands.index(u)))


def _n_plus_m(model: Model, sg: SG, view: View, sis: list[str]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    load = _Load(model)
    act_sus = [u for u in sg.sus if view.keep(u) and any(view.cur.get((u, s)) in (ACTIVE, QUIESCING)
                                                         for s in sg.sis)]
    std_sus = [u for u in sg.sus if view.keep(u) and u not in act_sus
               and any(view.cur.get((u, s)) == STANDBY for s in sg.sis)]
    actives: dict[str, int] = {}
    placed: dict[str, str] = {}
    swapped = set()
    for s in sis:  # keep or promote
        cur = next((u for u in _holders(view, s, ACTIVE) + _holders(view, s, QUIESCING) if view.keep(u)), None)
        std = next((u for u in _holders(view, s, STANDBY) if view.keep(u)), None)
        if s in view.swap and cur is not None and std is not None:
            cur, swapped = std, swapped | {s}
        if cur is None and std is not None:
            cur = std
        if cur is not None:
            if cur in std_sus:
                std_sus.remove(cur)
            if cur not in act_sus:
                act_sus.append(cur)
            placed[s] = cur
    spare = [u for u in sg.sus if view.eligible(u) and u not in act_sus and u not in std_sus]
    while len(act_sus) < sg.n_active and spare:
        act_sus.append(spare.pop(0))
    for s in sis:
        u = placed.get(s)
        if u is None:
            for cand in _pick([x for x in _order(model, sg, s) if x in act_sus and view.eligible(x)], actives,
                              sg.max_active):
                if load.fits(cand, s, ACTIVE):
                    u = cand
                    break
        elif not load.fits(u, s, ACTIVE):
            continue
        if u is not None:
            out[(u, s)] = (ACTIVE, 0)
            actives[u] = actives.get(u, 0) + 1
    while len(std_sus) < sg.n_standby and spare:
        std_sus.append(spare.pop(0))
    standbys: dict[str, int] = {}
    for s in sis:
        if not any(k[1] == s for k in out):
            continue
        cur = next((u for u in _holders(view, s, STANDBY) if u in std_sus), None)
        if s in swapped:
            cur = next((u for u in _holders(view, s, ACTIVE) if view.keep(u)), cur)
        cands = ([cur] if cur else []) + _pick([x for x in _order(model, sg, s) if x in std_sus and x != cur
                                                and view.eligible(x)], standbys, sg.max_standby)
        for cand in cands:
            if (cand, s) not in out and load.fits(cand, s, STANDBY):
                out[(cand, s)] = (STANDBY, 1)
                standbys[cand] = standbys.get(cand, 0) + 1
                break
    return out


def _pool(model: Model, sg: SG, view: View) -> list[str]:
    return [u for u in sg.sus if view.eligible(u) or view.keep(u)][: sg.n_assigned]


def _n_way(model: Model, sg: SG, view: View, sis: list[str]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    load = _Load(model)
    pool = _pool(model, sg, view)
    actives: dict[str, int] = {}
    standbys: dict[str, int] = {}
    for s in sis:
        stds = sorted((u for u in _holders(view, s, STANDBY) if view.keep(u)),
                      key=lambda u: view.standby_rank.get((u, s), 99))
        cur = next((u for u in _holders(view, s, ACTIVE) + _holders(view, s, QUIESCING) if view.keep(u)), None)
        if s in view.swap and cur is not None and stds:
            cur, stds = stds[0], [cur, *stds[1:]]
        if cur is None and stds:
            cur = stds.pop(0)
        if cur is None:
            for cand in _pick([x for x in _order(model, sg, s) if x in pool and view.eligible(x)], actives,
                              sg.max_active):
                if load.fits(cand, s, ACTIVE):
                    cur = cand
                    break
        elif not load.fits(cur, s, ACTIVE):
            cur = None
        if cur is None:
            continue
        out[(cur, s)] = (ACTIVE, 0)
        actives[cur] = actives.get(cur, 0) + 1
        rank = 0
        want = model.sis[s].pref_standby
        for u in stds:
            if rank < want and u != cur and load.fits(u, s, STANDBY):
                rank += 1
                out[(u, s)] = (STANDBY, rank)
                standbys[u] = standbys.get(u, 0) + 1
        for cand in _pick([x for x in _order(model, sg, s) if x in pool and view.eligible(x)
                           and (x, s) not in out], standbys, sg.max_standby):
            if rank >= want:
                break
            if load.fits(cand, s, STANDBY):
                rank += 1
                out[(cand, s)] = (STANDBY, rank)
                standbys[cand] = standbys.get(cand, 0) + 1
    return out


def _n_way_active(model: Model, sg: SG, view: View, sis: list[str]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    load = _Load(model)
    pool = _pool(model, sg, view)
    actives: dict[str, int] = {}
    for s in sis:
        want = model.sis[s].pref_active
        held = [u for u in _holders(view, s, ACTIVE) + _holders(view, s, QUIESCING) if view.keep(u)]
        got = 0
        for u in held:
            if got < want and load.fits(u, s, ACTIVE):
                out[(u, s)] = (ACTIVE, 0)
                actives[u] = actives.get(u, 0) + 1
                got += 1
        for u in _order(model, sg, s):
            if got >= want:
                break
            if u in pool and view.eligible(u) and (u, s) not in out \
                    and (not sg.max_active or actives.get(u, 0) < sg.max_active) and load.fits(u, s, ACTIVE):
                out[(u, s)] = (ACTIVE, 0)
                actives[u] = actives.get(u, 0) + 1
                got += 1
    return out


def _no_redundancy(model: Model, sg: SG, view: View, sis: list[str]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    load = _Load(model)
    used: set[str] = set()
    for s in sis:
        cur = next((u for u in _holders(view, s, ACTIVE) + _holders(view, s, QUIESCING)
                    if view.keep(u) and u not in used), None)
        if cur is not None and load.fits(cur, s, ACTIVE):
            out[(cur, s)] = (ACTIVE, 0)
            used.add(cur)
    for s in sis:
        if any(k[1] == s for k in out):
            continue
        held = {k[0] for k, h in view.cur.items() if k[1] != s and view.keep(k[0])}
        for u in sg.sus:
            if view.eligible(u) and u not in used and u not in held and load.fits(u, s, ACTIVE):
                out[(u, s)] = (ACTIVE, 0)
                used.add(u)
                break
    return out
