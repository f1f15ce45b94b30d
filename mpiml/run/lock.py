"""One run directory, one job: an exclusive lock that rank 0 holds for the whole run.

The lock is a file ``.mpiml.lock`` in the directory, created with ``O_EXCL`` and holding who has
it: host, pid (and the process's start time, so a reused pid is not mistaken for the holder),
the Slurm job id and restart count, and when it was taken. A second job on a locked directory
fails at once, before it moves, writes or deletes anything, naming the holder. A lock left by a
process that died on this host, or by an earlier run of the same Slurm job (a requeue, possibly
on another node), is taken over with a message; a lock held from another host needs an explicit
``--break-lock``, because a live process there cannot be seen from here.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

from ..files.atomic import process_alive

LOCK_NAME = ".mpiml.lock"


class RunLockError(RuntimeError):
    """The run directory is in use by another job; the message names the holder."""

    user_error = True


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None if unknown."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def _alive(holder: dict) -> bool:
    """Whether the holder's process still runs (on this host)."""
    pid = int(holder.get("pid", -1))
    if not process_alive(pid):
        return False
    fields = _stat(pid)
    if fields is not None and fields[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    ticks = holder.get("start_ticks")
    return ticks is None or fields is None or int(fields[19]) == ticks


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks":
            _start_ticks(os.getpid()), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def describe(holder: dict) -> str:
    job = f"Slurm job {holder['slurm_job_id']}, " if holder.get("slurm_job_id") else ""
    return (f"{job}pid {holder.get('pid')} on {holder.get('host')}, since "
            f"{holder.get('started')}")


class RunLock:
    """The lock of ``directory`` (call :meth:`acquire` and :meth:`release` on one rank)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.held = False
        self.created = False  # this lock made the directory: removed again if left empty

    def acquire(self, break_lock: bool = False) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over (None otherwise).
        Raises :class:`RunLockError` naming the holder when another job has it, or the reason
        when the directory cannot be made or written."""
        try:
            self.created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / f".mpiml-probe-{os.getpid()}",
                         os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
            os.unlink(self.directory / f".mpiml-probe-{os.getpid()}")
        except OSError as exc:
            in_the_way = next((p for p in (self.directory, *self.directory.parents)
                               if p.exists() and not p.is_dir()), None)
            reason = (f"{in_the_way} is a file, not a directory" if in_the_way is not None
                      else exc.strerror or str(exc))
            raise RunLockError(f"cannot use {self.directory} as a run directory (output.dir, "
                               f"checkpoint.dir): {reason}") from None
        note = None
        for _attempt in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written or removed just now: look again
                    time.sleep(0.05)
                    continue
                reason = self._stale(holder, break_lock)
                if reason is None:
                    raise RunLockError(
                        f"{self.directory} is in use by another run ({describe(holder)}; lock "
                        f"file {self.path}). Wait for it to end, or give this run another "
                        "output.dir; if that run is gone (e.g. its host died), pass "
                        "--break-lock") from None
                self._set_aside_stale(holder)
                note = f"took over the lock of {describe(holder)}: {reason}"
                continue
            with os.fdopen(fd, "w") as out:
                json.dump(_me(), out)
                out.flush()
                os.fsync(out.fileno())
            self.held = True
            return note
        raise RunLockError(f"cannot take the lock {self.path}: it keeps changing (another job "
                           "starting in the same directory?)")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _stale(holder: dict, break_lock: bool) -> str | None:
        """Why the holder's lock may be taken over, or None when it may not."""
        job = os.environ.get("SLURM_JOB_ID")
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if job and holder.get("slurm_job_id") == job and int(
                holder.get("slurm_restart", 0)) < restart:
            return "an earlier run of this Slurm job (requeued)"
        if holder.get("host") == socket.gethostname() and not _alive(holder):
            return "that process is gone"
        if break_lock:
            return "--break-lock"
        return None

    def _set_aside_stale(self, holder: dict) -> None:
        """Move the stale lock away atomically (of two takers, one wins the rename); if what
        was moved is not the stale lock any more (another job took it over meanwhile), put it
        back."""
        moved = self.path.with_name(f"{LOCK_NAME}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return
        try:
            taken = json.loads(moved.read_text())
        except (OSError, ValueError):
            taken = None
        if taken is not None and taken != holder:
            try:
                os.link(moved, self.path)
            except FileExistsError:
                pass
        moved.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process still holds it (idempotent), and the directory if
        this lock made it and the run left nothing in it (it failed before writing)."""
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder is not None and holder.get("pid") == os.getpid() and holder.get(
                "host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        if self.created:
            try:
                self.directory.rmdir()  # only if empty
            except OSError:
                pass
