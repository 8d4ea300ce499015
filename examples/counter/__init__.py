"""The counter service: a stateful sequence server kept highly available by AMF and CKPT.

Each node runs one server component (started by AMF from ``amf.conf``); AMF
makes one of them ACTIVE and one STANDBY (a 2N service group).  The active
server hands out the next number of a sequence to clients over TCP and
records every change in a checkpoint *before* it answers; the standby follows
the checkpoint; when the active dies, AMF makes the standby active and it
carries on from the recorded state, so no client ever sees a number twice or
a number go back.

- :mod:`examples.counter.server`: the AMF component (``python -m examples.counter.server``);
- :mod:`examples.counter.protocol`: the line protocol and the checkpoint record;
- :mod:`examples.counter.client`: the client that finds the active server (library and CLI);
- :mod:`examples.counter.config`: the amf.conf of the demo;
- :mod:`examples.counter.demo`: ``openais-demo failover``.
"""
