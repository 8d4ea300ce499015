"""logsys: corosync's line layout, per-subsystem levels and destinations, reopen, blackbox, journal prefixes."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from aisexec import logsys


@pytest.fixture(autouse=True)
def _reset():
    yield
    logsys.reset_logging()


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_layout_priority_and_subsystem_padding():
    out = io.StringIO()
    logsys.configure_logging({"to_stderr": True, "to_syslog": False}, [], foreground=True, stderr=out)
    logging.getLogger("aisexec.totem").log(logsys.NOTICE, "A new membership (1.4) was formed.")
    logging.getLogger("aisexec.cpg.groups").warning("w %d", 3)
    logging.getLogger("aisexec.ipc").critical("boom")
    assert _lines(out) == [
        "notice  [TOTEM ] A new membership (1.4) was formed.",
        "warning [CPG   ] w 3",
        "crit    [IPC   ] boom",
    ]


def test_timestamp_and_fileline():
    out = io.StringIO()
    logsys.configure_logging({"timestamp": "on", "fileline": "on", "to_syslog": False}, [], foreground=True,
                             stderr=out)
    logging.getLogger("aisexec.main").info("hello")
    (line,) = _lines(out)
    assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d info    \[MAIN  \] test_logsys\.py:\d+ hello", line)


def test_debug_off_by_default_and_per_subsystem_override():
    out = io.StringIO()
    logsys.configure_logging({"debug": "off", "to_syslog": False},
                             [{"subsys": "TOTEM", "debug": "on"}, {"subsys": "CPG", "to_stderr": False}],
                             foreground=True, stderr=out)
    logging.getLogger("aisexec.totem").debug("totem debug")
    logging.getLogger("aisexec.ipc").debug("ipc debug")
    logging.getLogger("aisexec.cpg").error("cpg error")
    logging.getLogger("aisexec.ipc").info("ipc info")
    assert _lines(out) == ["debug   [TOTEM ] totem debug", "info    [IPC   ] ipc info"]


def test_force_debug_turns_on_every_subsystem():
    out = io.StringIO()
    logsys.configure_logging({"to_syslog": False}, [], foreground=True, stderr=out, force_debug=True)
    logging.getLogger("aisexec.sync").debug("d")
    assert _lines(out) == ["debug   [SYNC  ] d"]


def test_daemon_mode_does_not_write_stderr():
    out = io.StringIO()
    logsys.configure_logging({"to_stderr": True, "to_syslog": False}, [], foreground=False, stderr=out)
    logging.getLogger("aisexec.main").error("x")
    assert out.getvalue() == ""


def test_logfile_priority_subsystem_file_and_reopen(tmp_path):
    main_log = tmp_path / "log" / "aisexec.log"
    cpg_log = tmp_path / "cpg.log"
    logsys.configure_logging(
        {"to_stderr": False, "to_syslog": False, "to_file": True, "logfile": str(main_log),
         "logfile_priority": "notice"},
        [{"subsys": "CPG", "logfile": str(cpg_log), "logfile_priority": "info"}],
        foreground=True)
    logging.getLogger("aisexec.totem").info("dropped by logfile_priority")
    logging.getLogger("aisexec.totem").log(logsys.NOTICE, "kept")
    logging.getLogger("aisexec.cpg").info("cpg info")
    assert main_log.read_text().splitlines() == ["notice  [TOTEM ] kept"]
    assert cpg_log.read_text().splitlines() == ["info    [CPG   ] cpg info"]
    rotated = tmp_path / "rotated.log"
    os.rename(main_log, rotated)
    assert logsys.reopen() == 2
    logging.getLogger("aisexec.totem").error("after reopen")
    assert main_log.read_text().splitlines() == ["error   [TOTEM ] after reopen"]
    assert "after reopen" not in rotated.read_text()


def test_blackbox_keeps_debug_records_and_dumps(tmp_path):
    logsys.configure_logging({"to_stderr": False, "to_syslog": False}, [], foreground=True)
    for i in range(logsys.BLACKBOX_SIZE + 10):
        logging.getLogger("aisexec.totem").debug("record %d", i)
    records = logsys.blackbox_records()
    assert len(records) == logsys.BLACKBOX_SIZE
    assert records[-1].getMessage() == f"record {logsys.BLACKBOX_SIZE + 9}"
    path = tmp_path / "bb.log"
    assert logsys.dump_blackbox(str(path)) == logsys.BLACKBOX_SIZE
    last = path.read_text().splitlines()[-1]
    assert last.endswith(f"debug   [TOTEM ] test_logsys.py:{records[-1].lineno} record {logsys.BLACKBOX_SIZE + 9}")


def test_journal_stream_uses_sd_daemon_prefixes(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w+") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        logsys.configure_logging({"timestamp": "on", "to_syslog": False}, [], foreground=True, stderr=stream)
        logging.getLogger("aisexec.totem").log(logsys.NOTICE, "n")
        logging.getLogger("aisexec.totem").error("e")
        stream.flush()
        stream.seek(0)
        assert stream.read().splitlines() == ["<5>notice  [TOTEM ] n", "<3>error   [TOTEM ] e"]


def test_syslog_destination_on_a_unix_socket(tmp_path):
    import socket

    addr = str(tmp_path / "devlog")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(addr)
    server.settimeout(2)
    try:
        logsys.configure_logging({"to_stderr": False, "to_syslog": True, "syslog_facility": "local3"}, [],
                                 foreground=True, syslog_address=addr)
        logging.getLogger("aisexec.totem").log(logsys.NOTICE, "to syslog")
        data = server.recv(4096).decode()
    finally:
        server.close()
    # facility local3 (19) * 8 + notice (5) = 157
    assert data.startswith(f"<157>aisexec[{os.getpid()}]: notice  [TOTEM ] to syslog")


def test_priority_name_rounds_down():
    assert logsys.priority_name(logging.INFO + 1) == "info"
    assert logsys.priority_name(5) == "debug"
    assert logsys.subsys_of("gevent.hub") == "MAIN"
    assert logsys.get_logger("CPG").name == "aisexec.cpg"
