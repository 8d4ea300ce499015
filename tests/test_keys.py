"""load_authkey refuses missing, mis-sized and group/other-accessible keys with a fix in the message."""

from __future__ import annotations

import os

import pytest

from aisexec.keys import AUTHKEY_SIZE, KeyFileError, load_authkey


def _key(path, data: bytes, mode: int) -> str:
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


def test_good_key_loads(tmp_path):
    data = os.urandom(AUTHKEY_SIZE)
    assert load_authkey(_key(tmp_path / "k", data, 0o400)) == data


def test_missing_key_says_run_keygen(tmp_path):
    path = str(tmp_path / "nope")
    with pytest.raises(KeyFileError) as err:
        load_authkey(path)
    assert f"ais-keygen -k {path}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("size", [0, 127, 129, 256])
def test_wrong_size_is_refused(tmp_path, size):
    path = _key(tmp_path / "k", b"x" * size, 0o600)
    with pytest.raises(KeyFileError, match="must be 128") as err:
        load_authkey(path)
    assert "ais-keygen" in str(err.value)


@pytest.mark.parametrize("mode", [0o644, 0o440, 0o404, 0o620])
def test_group_or_other_access_is_refused(tmp_path, mode):
    path = _key(tmp_path / "k", os.urandom(AUTHKEY_SIZE), mode)
    with pytest.raises(KeyFileError) as err:
        load_authkey(path)
    assert f"chmod 0400 {path}" in str(err.value) and f"{mode:04o}" in str(err.value)


def test_directory_is_refused(tmp_path):
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_authkey(str(d))
