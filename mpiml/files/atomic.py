"""Durable, atomic file writes: every file mpiml writes appears complete or not at all.

:func:`atomic_hdf5` (and :func:`atomic_text`) write under a temporary name unique to this
process in the target's directory, close the file (HDF5 rewrites its superblock on close), fsync
it, rename it over the final name (atomic on POSIX) and fsync the directory, so the rename itself
survives a crash. A reader therefore sees the old file or the new one, never a partial file under
a final name; a writer killed half-way leaves only a temporary file, which
:func:`stale_temporaries` finds (a run removes those of dead writers when it starts).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

#: ``.<final name>.tmp-<pid>-<token>@<host>``: the writer's process and host, so that a later
#: run can tell a dead writer's leftovers from a live writer's file.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}@(?P<host>.+)$")


def temporary_name(final: Path) -> Path:
    """A name beside ``final`` that no other process (on any host) will pick."""
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{token}@{socket.gethostname()}")


def fsync_path(path: Path) -> None:
    """Flush a closed file's (or a directory's) data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_hdf5(path) -> Iterator[h5py.File]:
    """Yield a new HDF5 file that becomes ``path`` only when the ``with`` block succeeds
    (close, fsync, rename, fsync the directory); the missing parent directory is created. On an
    exception nothing is left behind and ``path`` keeps its old content."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(final)
    try:
        with h5py.File(temporary, "w") as handle:
            yield handle
        _commit(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` the same way (temporary file, fsync, rename, directory
    fsync); returns the path."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(final)
    try:
        temporary.write_text(text)
        _commit(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


def _commit(temporary: Path, final: Path) -> None:
    """The closed ``temporary`` becomes ``final``, durably."""
    fsync_path(temporary)
    os.replace(temporary, final)
    fsync_path(final.parent)


def stale_temporaries(directory) -> list[Path]:
    """Temporary files in ``directory`` left by writers that died on this host (their process
    is gone). Temporaries of live processes and of other hosts are not included."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    host, stale = socket.gethostname(), []
    for path in directory.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and match["host"] == host and not process_alive(int(match["pid"])):
            stale.append(path)
    return sorted(stale)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (it may be a zombie: see run.lock)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
