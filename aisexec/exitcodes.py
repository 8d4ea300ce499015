"""The executive's exit codes, numbered like corosync's ``e_corosync_done`` where they overlap.

=====  ================  =====================================================
code   name              meaning
=====  ================  =====================================================
0      OK                clean stop (SIGTERM/SIGINT) or ``-t`` found no problem
1      USAGE             bad command line (argparse also uses 2)
8      CONFIG            main configuration missing, unreadable or invalid
9      KEY               Totem authentication key missing, wrong size or mode
10     LOGGING           a log file or syslog could not be opened
11     DAEMONIZE         fork/setsid or the pid file failed
18     ALREADY_RUNNING   another executive holds the state directory's lock
19     RESOURCE_BUSY     a port or socket is in use right now (a restart may succeed)
20     SERVICE_INIT      a service engine failed in exec_init or start-up
21     PLUGIN            a plugin (config interface or service) failed to load
22     SETUID            run setuid/setgid: refused
23     RUNTIME           a long-lived greenlet died unexpectedly
=====  ================  =====================================================
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of ``aisexec`` (see the module table)."""

    OK = 0
    USAGE = 1
    CONFIG = 8
    KEY = 9
    LOGGING = 10
    DAEMONIZE = 11
    ALREADY_RUNNING = 18
    RESOURCE_BUSY = 19
    SERVICE_INIT = 20
    PLUGIN = 21
    SETUID = 22
    RUNTIME = 23
