"""bench/procstat.py: the /proc readers every bench script shares."""

from __future__ import annotations

import os
import platform
import time

from bench.procstat import cpu_s, ctx_switches, rss_kb, sys_s


def test_cpu_seconds_grow_with_work_and_include_the_kernel_share():
    before, kernel_before = cpu_s(os.getpid()), sys_s(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    after = cpu_s(os.getpid())
    assert after - before >= 0.2
    assert 0 <= sys_s(os.getpid()) - kernel_before <= after - before + 0.05


def test_rss_and_peak_are_read_from_status_and_an_unknown_field_is_zero():
    rss, peak = rss_kb(os.getpid()), rss_kb(os.getpid(), "VmHWM")
    assert 1000 < rss <= peak
    assert rss_kb(os.getpid(), "NoSuchField") == 0


def test_context_switches_count_a_sleep():
    before = ctx_switches(os.getpid())
    time.sleep(0.01)
    assert ctx_switches(os.getpid()) > before


def test_rows_name_the_real_interpreter_and_its_speed(tmp_path):
    import subprocess
    import sys

    from bench.hostinfo import host_fields, interpreter

    fields = host_fields()
    assert fields is host_fields()  # measured once per process
    assert fields["python"] == interpreter()
    implementation, version, executable = interpreter().split(" ", 2)
    assert implementation == platform.python_implementation()
    assert version == ".".join(map(str, sys.version_info[:3]))
    assert os.path.isfile(executable) and not os.path.islink(executable)
    assert 1 < fields["py_unpack_ns"] < 5000
    # a venv's python is a link: the row names what it points to
    link = tmp_path / "python"
    link.symlink_to(sys.executable)
    out = subprocess.run([str(link), "-c", "from bench.hostinfo import interpreter; print(interpreter())"],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)), check=True)
    assert out.stdout.split(" ", 2)[2].strip() == os.path.realpath(sys.executable)
