"""ais-keygen: size, mode 0400 whatever the umask, refusing to overwrite, --force, env var path."""

from __future__ import annotations

import os
import stat

import pytest

from aisexec import keygen
from aisexec.keys import AUTHKEY_SIZE, load_authkey


def test_writes_128_random_bytes_mode_0400_even_with_open_umask(tmp_path, capsys):
    path = tmp_path / "ais" / "authkey"
    old = os.umask(0)
    try:
        assert keygen.main(["-k", str(path)]) == keygen.EXIT_OK
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert len(data) == AUTHKEY_SIZE and len(set(data)) > 32
    assert load_authkey(str(path)) == data
    assert "1024-bit" in capsys.readouterr().out
    assert [p.name for p in path.parent.iterdir()] == ["authkey"]  # no temporary left behind


def test_refuses_to_replace_without_force(tmp_path, capsys):
    path = tmp_path / "authkey"
    assert keygen.main(["-k", str(path)]) == 0
    before = path.read_bytes()
    assert keygen.main(["-k", str(path)]) == keygen.EXIT_EXISTS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and str(path) in err
    assert path.read_bytes() == before


def test_force_replaces_with_a_new_key(tmp_path):
    path = tmp_path / "authkey"
    first = keygen.write_authkey(str(path))
    assert keygen.main(["--force", "-k", str(path)]) == 0
    assert path.read_bytes() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_env_var_names_the_default_path(tmp_path, monkeypatch):
    path = tmp_path / "envkey"
    monkeypatch.setenv("OPENAIS_TOTEM_AUTHKEY_FILE", str(path))
    assert keygen.main([]) == 0
    assert len(path.read_bytes()) == AUTHKEY_SIZE


def test_default_path_without_env():
    assert keygen.default_path({}) == "/etc/ais/authkey"


def test_unwritable_directory_is_one_line_error(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert keygen.main(["-k", str(locked / "authkey")]) == keygen.EXIT_IO
    assert "cannot write" in capsys.readouterr().err
