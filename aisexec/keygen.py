"""``ais-keygen``: write a new 1024-bit Totem authentication key, mode 0400, atomically."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from aisexec.keys import AUTHKEY_SIZE

DEFAULT_AUTHKEY = "/etc/ais/authkey"
AUTHKEY_ENV = "OPENAIS_TOTEM_AUTHKEY_FILE"

EXIT_OK = 0
EXIT_EXISTS = 1
EXIT_IO = 2


class KeyExistsError(FileExistsError):
    """A key already exists at the path and ``force`` was not given."""


def default_path(environ: dict[str, str] | None = None) -> str:
    """``$OPENAIS_TOTEM_AUTHKEY_FILE`` or ``/etc/ais/authkey``."""
    source = os.environ if environ is None else environ
    return source.get(AUTHKEY_ENV) or DEFAULT_AUTHKEY


def write_authkey(path: str, *, force: bool = False, key: bytes | None = None) -> bytes:
    """Write ``key`` (default: 128 random bytes) to ``path`` with mode 0400 and return it.

    The key is written to a temporary file created O_EXCL with mode 0400
    (independent of the umask), fsynced, then renamed over ``path`` — so a
    reader never sees a partial key.  The parent directory is created 0700
    when missing.  Raises :class:`KeyExistsError` if ``path`` exists and
    ``force`` is false.
    """
    data = secrets.token_bytes(AUTHKEY_SIZE) if key is None else key
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if not force and os.path.lexists(path):
        raise KeyExistsError(path)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    try:
        os.fchmod(fd, 0o400)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if someone created path meanwhile
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise KeyExistsError(path) from None
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    dirfd = os.open(parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return data


def main(argv: list[str] | None = None) -> int:
    """Console script ``ais-keygen [-k PATH] [--force]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="ais-keygen",
        description=f"Write a new {AUTHKEY_SIZE * 8}-bit Totem authentication key (mode 0400). "
                    "Copy it to every node of the cluster.")
    parser.add_argument("-k", "--key-file", dest="path", default=None,
                        help=f"key path (default ${AUTHKEY_ENV} or {DEFAULT_AUTHKEY})")
    parser.add_argument("--force", action="store_true", help="replace an existing key")
    args = parser.parse_args(argv)
    path = args.path or default_path()
    try:
        write_authkey(path, force=args.force)
    except KeyExistsError:
        print(f"ais-keygen: error: {path} already exists; use --force to replace it "
              "(every node must then get the new key)", file=sys.stderr)
        return EXIT_EXISTS
    except OSError as exc:
        print(f"ais-keygen: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_IO
    print(f"Wrote a {AUTHKEY_SIZE * 8}-bit authentication key to {path} (mode 0400); "
          "copy it to every node with the same mode.")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
