"""Logging in corosync's layout on stdlib ``logging``: one logger per subsystem, several destinations.

Every subsystem logs to ``logging.getLogger("aisexec.<subsys>")`` (``aisexec.totem``,
``aisexec.cpg``, ...).  A line reads like corosync's::

    Nov 23 07:40:01 notice  [TOTEM ] A new membership (1.d43) was formed.

(timestamp only with ``timestamp: on``; priority padded to 7, subsystem in
brackets padded to 6).  :func:`configure_logging` applies the ``logging { }``
section and its ``logger_subsys { }`` overrides; :func:`reopen` reopens log
files (SIGHUP, logrotate); the blackbox keeps the most recent records,
debug included, in memory for :func:`dump_blackbox` (SIGUSR2).
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

ROOT = "aisexec"
#: corosync's "notice" sits between INFO and WARNING.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

#: logging level -> corosync priority name.
PRIORITY_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    NOTICE: "notice",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "crit",
}
#: syslog priority names of the config (syslog_priority, logfile_priority) -> logging level.
CONFIG_PRIORITIES = {
    "emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
    "err": logging.ERROR, "error": logging.ERROR, "warning": logging.WARNING,
    "notice": NOTICE, "info": logging.INFO, "debug": logging.DEBUG,
}
#: sd-daemon(3) prefixes per syslog priority name.
_SD_PREFIX = {"debug": "<7>", "info": "<6>", "notice": "<5>", "warning": "<4>", "error": "<3>", "crit": "<2>"}
BLACKBOX_SIZE = 5000


def priority_name(levelno: int) -> str:
    """The corosync priority name of a logging level (rounded down to the nearest known level)."""
    best = logging.DEBUG
    for level in PRIORITY_NAMES:
        if level <= levelno and level > best:
            best = level
    return PRIORITY_NAMES[best]


def subsys_of(logger_name: str) -> str:
    """``aisexec.totem.srp`` -> ``TOTEM``; anything outside ``aisexec`` (or ``aisexec`` itself) -> ``MAIN``."""
    parts = logger_name.split(".")
    if len(parts) >= 2 and parts[0] == ROOT and parts[1]:
        return parts[1].upper()
    return "MAIN"


def get_logger(subsys: str) -> logging.Logger:
    """The logger of subsystem ``subsys`` (``TOTEM`` -> ``aisexec.totem``)."""
    return logging.getLogger(f"{ROOT}.{subsys.lower()}")


def _on(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() in ("on", "yes", "true", "1", "trace")
    return bool(value)


@dataclass(frozen=True, slots=True)
class SubsysSettings:
    """Effective logging settings of one subsystem (the ``logging`` section plus its override)."""

    debug: bool = False
    to_stderr: bool = True
    to_logfile: bool = False
    to_syslog: bool = False
    logfile: str | None = None
    timestamp: bool = False
    fileline: bool = False
    syslog_level: int = logging.INFO
    logfile_level: int = logging.INFO

    @classmethod
    def from_section(cls, section: dict, base: SubsysSettings | None = None, *, force_debug: bool = False):
        """Settings from a ``logging``/``logger_subsys`` dict; unset (None/missing) keys come from ``base``."""
        base = base or cls()

        def pick(key: str, default):
            value = section.get(key)
            return default if value is None else value

        to_logfile = section.get("to_logfile")
        if to_logfile is None:
            to_logfile = section.get("to_file")
        return cls(
            debug=force_debug or _on(pick("debug", base.debug)),
            to_stderr=_on(pick("to_stderr", base.to_stderr)),
            to_logfile=_on(base.to_logfile if to_logfile is None else to_logfile),
            to_syslog=_on(pick("to_syslog", base.to_syslog)),
            logfile=pick("logfile", base.logfile),
            timestamp=_on(pick("timestamp", base.timestamp)),
            fileline=_on(pick("fileline", base.fileline)),
            syslog_level=CONFIG_PRIORITIES.get(str(pick("syslog_priority", "")).lower(), base.syslog_level),
            logfile_level=CONFIG_PRIORITIES.get(str(pick("logfile_priority", "")).lower(), base.logfile_level),
        )


@dataclass(slots=True)
class LogPolicy:
    """The main settings and the per-subsystem overrides, looked up by subsystem name."""

    main: SubsysSettings = field(default_factory=SubsysSettings)
    overrides: dict[str, SubsysSettings] = field(default_factory=dict)

    def of(self, subsys: str) -> SubsysSettings:
        """Settings for ``subsys`` (upper-case name)."""
        return self.overrides.get(subsys, self.main)

    def all(self) -> Iterable[SubsysSettings]:
        """The main settings and every override."""
        yield self.main
        yield from self.overrides.values()


class CorosyncFormatter(logging.Formatter):
    """``[Mon DD HH:MM:SS ]priority [SUBSYS] [file:line ]message`` with per-subsystem timestamp/fileline."""

    def __init__(self, policy: LogPolicy, *, journal: bool = False, timestamp: bool | None = None,
                 fileline: bool | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.journal = journal
        self.timestamp = timestamp
        self.fileline = fileline

    def format(self, record: logging.LogRecord) -> str:
        """Render one record in corosync's layout."""
        subsys = subsys_of(record.name)
        settings = self.policy.of(subsys)
        prio = priority_name(record.levelno)
        parts = []
        if self.journal:
            parts.append(_SD_PREFIX[prio])
        elif self.timestamp if self.timestamp is not None else settings.timestamp:
            parts.append(time.strftime("%b %d %H:%M:%S ", time.localtime(record.created)))
        parts.append(f"{prio:<7} [{subsys:<6}] ")
        if self.fileline if self.fileline is not None else settings.fileline:
            parts.append(f"{record.filename}:{record.lineno} ")
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append("\n" + self.formatException(record.exc_info))
        return "".join(parts)


class _DestinationFilter(logging.Filter):
    """Passes a record when its subsystem sends to this destination at this priority."""

    def __init__(self, policy: LogPolicy, destination: str, logfile: str | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.destination = destination
        self.logfile = logfile

    def filter(self, record: logging.LogRecord) -> bool:
        s = self.policy.of(subsys_of(record.name))
        if self.destination == "stderr":
            return s.to_stderr and record.levelno >= (logging.DEBUG if s.debug else logging.INFO)
        if self.destination == "syslog":
            return s.to_syslog and record.levelno >= (logging.DEBUG if s.debug else s.syslog_level)
        return (s.to_logfile and s.logfile == self.logfile
                and record.levelno >= (logging.DEBUG if s.debug else s.logfile_level))


class ReopenableFileHandler(logging.FileHandler):
    """A log file that :meth:`reopen` closes and opens again by name (after logrotate moved it)."""

    def reopen(self) -> None:
        """Open the path again and close the old stream."""
        self.acquire()
        try:
            old = self.setStream(self._open())
            if old is not None:
                old.close()
        finally:
            self.release()


class _SyslogHandler(logging.handlers.SysLogHandler):
    """SysLogHandler with corosync's priority names and an ``aisexec[pid]: `` ident."""

    def mapPriority(self, levelName: str) -> str:
        """``NOTICE`` -> ``notice``, ``CRITICAL`` -> ``crit``."""
        level = logging.getLevelName(levelName)
        return priority_name(level) if isinstance(level, int) else "warning"

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record, with the current pid in the ident."""
        self.ident = f"aisexec[{record.process}]: "
        super().emit(record)


class BlackboxHandler(logging.Handler):
    """The flight recorder: the last ``size`` records (debug included), kept unformatted."""

    def __init__(self, size: int = BLACKBOX_SIZE) -> None:
        super().__init__(logging.DEBUG)
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record (the oldest falls out)."""
        self.records.append(record)

    def handle(self, record: logging.LogRecord) -> bool:
        """Append without taking the handler lock (deque.append is atomic)."""
        self.records.append(record)
        return True


@dataclass(slots=True)
class _State:
    policy: LogPolicy = field(default_factory=LogPolicy)
    handlers: list[logging.Handler] = field(default_factory=list)
    files: list[ReopenableFileHandler] = field(default_factory=list)
    blackbox: BlackboxHandler = field(default_factory=BlackboxHandler)


_state = _State()


def _journal_stream(stream) -> bool:
    """True when ``stream`` is the journal stream systemd announced in ``$JOURNAL_STREAM`` (dev:ino)."""
    announced = os.environ.get("JOURNAL_STREAM")
    if not announced:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return announced == f"{info.st_dev}:{info.st_ino}"


def build_policy(logging_section: dict, logger_subsys: list[dict], *, force_debug: bool = False) -> LogPolicy:
    """The :class:`LogPolicy` of a ``logging`` section and its ``logger_subsys`` list."""
    main = SubsysSettings.from_section(logging_section or {}, force_debug=force_debug)
    overrides = {}
    for entry in logger_subsys or []:
        name = str(entry.get("subsys", "")).upper()
        if name:
            overrides[name] = SubsysSettings.from_section(entry, main, force_debug=force_debug)
    return LogPolicy(main, overrides)


def reset_logging() -> None:
    """Remove every handler :func:`configure_logging` installed and close its files."""
    logger = logging.getLogger(ROOT)
    for handler in _state.handlers:
        logger.removeHandler(handler)
        handler.close()
    logger.removeHandler(_state.blackbox)
    _state.handlers.clear()
    _state.files.clear()
    logger.setLevel(logging.NOTSET)


def configure_logging(logging_section: dict, logger_subsys: list[dict], *, foreground: bool,
                      force_debug: bool = False, stderr=None, blackbox: bool = True,
                      syslog_address: str = "/dev/log") -> LogPolicy:
    """Install the destinations of the ``logging`` section (replacing any earlier configuration).

    ``to_stderr`` applies only in the foreground (a daemon's stderr is
    /dev/null); under systemd (``$JOURNAL_STREAM`` names our stderr) lines
    carry sd-daemon ``<N>`` prefixes instead of timestamps.  ``to_logfile``
    opens each distinct ``logfile`` once (raises OSError if it cannot);
    ``to_syslog`` uses ``syslog_facility`` on ``syslog_address`` when that
    socket exists.  ``force_debug`` (``--debug``) turns debug on everywhere.
    With ``blackbox`` the loggers pass debug records so the flight recorder
    keeps them.  Returns the effective policy.
    """
    reset_logging()
    policy = build_policy(logging_section, logger_subsys, force_debug=force_debug)
    _state.policy = policy
    logger = logging.getLogger(ROOT)
    stream = sys.stderr if stderr is None else stderr
    handlers: list[logging.Handler] = []
    if foreground and any(s.to_stderr for s in policy.all()):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(CorosyncFormatter(policy, journal=_journal_stream(stream)))
        handler.addFilter(_DestinationFilter(policy, "stderr"))
        handlers.append(handler)
    paths = sorted({s.logfile for s in policy.all() if s.to_logfile and s.logfile})
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        file_handler = ReopenableFileHandler(path, mode="a", encoding="utf-8")
        file_handler.setFormatter(CorosyncFormatter(policy))
        file_handler.addFilter(_DestinationFilter(policy, "logfile", path))
        handlers.append(file_handler)
        _state.files.append(file_handler)
    if any(s.to_syslog for s in policy.all()) and os.path.exists(syslog_address):
        facility_name = str((logging_section or {}).get("syslog_facility") or "daemon").lower()
        facility = logging.handlers.SysLogHandler.facility_names.get(facility_name,
                                                                   logging.handlers.SysLogHandler.LOG_DAEMON)
        try:
            syslog = _SyslogHandler(address=syslog_address, facility=facility)
        except OSError:
            syslog = None
        if syslog is not None:
            syslog.setFormatter(CorosyncFormatter(policy, timestamp=False))
            syslog.addFilter(_DestinationFilter(policy, "syslog"))
            handlers.append(syslog)
    for handler in handlers:
        logger.addHandler(handler)
    _state.handlers = handlers
    if blackbox:
        logger.addHandler(_state.blackbox)
        logger.setLevel(logging.DEBUG)
    else:
        any_debug = any(s.debug for s in policy.all())
        logger.setLevel(logging.DEBUG if any_debug else logging.INFO)
    return policy


def describe_destinations() -> str:
    """``logging to stderr, file PATH; debug on for ...``: the configured destinations (start-up debug line)."""
    def one(handler: logging.Handler) -> str:
        if isinstance(handler, ReopenableFileHandler):
            return f"file {handler.baseFilename}"
        if isinstance(handler, logging.handlers.SysLogHandler):
            return "syslog"
        return "stderr"

    policy = _state.policy
    debug = "every subsystem" if policy.main.debug else (
        ", ".join(name for name, o in policy.overrides.items() if o.debug) or "no subsystem")
    return f"logging to {', '.join(one(h) for h in _state.handlers) or 'nothing'}; debug on for {debug}"


def reopen() -> int:
    """Reopen every log file (SIGHUP after logrotate); returns how many were reopened."""
    for handler in _state.files:
        handler.reopen()
    return len(_state.files)


def blackbox_records() -> list[logging.LogRecord]:
    """The records the flight recorder holds, oldest first."""
    return list(_state.blackbox.records)


def dump_blackbox(path: str) -> int:
    """Write the flight recorder to ``path`` (timestamps and file:line on); returns the record count."""
    formatter = CorosyncFormatter(_state.policy, timestamp=True, fileline=True)
    records = blackbox_records()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(formatter.format(record) + "\n")
    return len(records)
