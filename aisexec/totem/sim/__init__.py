"""Deterministic simulator for the sans-IO Totem core, with EVS invariant checking.

One ``random.Random(seed)`` drives everything; a virtual clock orders events by
``(time, sequence)``.  :func:`aisexec.totem.sim.runner.run_seed` runs one generated
scenario and returns a :class:`~aisexec.totem.sim.runner.SimResult`; the soak CLI is
``python -m aisexec.totem.sim --seeds N --start S --nodes 2-16``.

Two sets of checks: :mod:`~aisexec.totem.sim.online` runs after every step (SAFE delivery,
gap rule, flow control, buffer release, stale tokens), :mod:`~aisexec.totem.sim.invariants`
on the recorded streams at the end (order, configurations, virtual synchrony, liveness).
"""
