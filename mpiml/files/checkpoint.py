"""Checkpoints: atomic writes by rank 0, verified loads, and discovery of the newest valid one.

A checkpoint is one HDF5 file ``ckpt-<step>.h5`` holding named float/int arrays (parameters,
optimizer state, loop counters...) and scalar attributes, plus a SHA-256 over every array's name,
dtype, shape and bytes and over the attributes. No pickle.

Writing (:func:`save`) goes through :func:`mpiml.files.atomic.atomic_hdf5` (temporary file,
close, fsync, rename, directory fsync), so a reader sees either the old set of checkpoints or the
new one, never a partial file under a final name. Loading (:func:`load`) recomputes the checksum and
refuses a file that does not match; :func:`latest_valid` walks back from the newest file and
skips (and reports) any that fail, so a corrupt or truncated newest checkpoint is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from .atomic import atomic_hdf5, fsync_path

FORMAT = "mpiml-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{10})\.h5$")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and the reason."""

    user_error = True  # printed as one line: the message says which file and why


@dataclass
class Checkpoint:
    """What a checkpoint holds: arrays by name ("params", "opt/step", ...) and scalar metadata
    (numbers and strings only)."""

    step: int
    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)


def file_name(step: int) -> str:
    return f"ckpt-{step:010d}.h5"


def _digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        hasher.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        hasher.update(array.tobytes())
    hasher.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return hasher.hexdigest()


def save(directory, checkpoint: Checkpoint, keep: int | None = None, fault=None) -> Path:
    """Write ``checkpoint`` atomically into ``directory`` (call on one rank only); keep the newest
    ``keep`` checkpoints (None keeps all). ``fault`` is called half-way through the write (fault
    injection for tests of a crash during a checkpoint)."""
    directory = Path(directory)
    final = directory / file_name(checkpoint.step)
    meta = dict(checkpoint.meta, step=int(checkpoint.step), format=FORMAT,
                format_version=FORMAT_VERSION, mpiml_version=__version__)
    with atomic_hdf5(final) as out:
        for index, (name, array) in enumerate(sorted(checkpoint.arrays.items())):
            out.create_dataset(name, data=np.asarray(array))
            if fault is not None and index == len(checkpoint.arrays) // 2:
                out.flush()
                fault()
        out.attrs["meta"] = json.dumps(meta, sort_keys=True)
        out.attrs["sha256"] = _digest(checkpoint.arrays, meta)
    if keep is not None:
        mine = [p for p in list_checkpoints(directory)
                if p != final and lineage_of(p) == meta.get("lineage")]
        for old in mine[:max(len(mine) - (keep - 1), 0)]:
            old.unlink(missing_ok=True)
    return final


def set_aside(directory, paths: list[Path] | None = None) -> Path | None:
    """Move ``paths`` (default: every checkpoint in ``directory``) into a new subdirectory
    ``replaced-<UTC time>-<random>/`` of its own -- nothing is deleted, and a later ``--resume
    auto`` cannot pick them up. Returns that subdirectory, or None when there was nothing to
    move."""
    found = list_checkpoints(directory) if paths is None else list(paths)
    if not found:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    while True:
        target = Path(directory) / f"replaced-{stamp}-{secrets.token_hex(3)}"
        try:
            target.mkdir()
            break
        except FileExistsError:
            continue
    for path in found:
        os.replace(path, target / path.name)
    fsync_path(target)
    fsync_path(Path(directory))
    return target


def step_of(path: Path) -> int:
    """The step in a checkpoint's file name."""
    return int(_NAME.match(Path(path).name).group(1))


def read_meta(path) -> dict | None:
    """A checkpoint's metadata without reading its arrays or checking its checksum (None if it
    cannot be read): to sort checkpoints by run before loading one."""
    try:
        with h5py.File(path, "r") as src:
            return json.loads(src.attrs["meta"])
    except (OSError, KeyError, ValueError):
        return None


def lineage_of(path) -> str | None:
    """The lineage (run identity) a checkpoint belongs to, from its metadata."""
    meta = read_meta(path)
    return None if meta is None else meta.get("lineage")


def list_checkpoints(directory) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first (by step in the name)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def load(path) -> Checkpoint:
    """Read and verify one checkpoint; raise :class:`CheckpointError` naming the file if it is
    missing, unreadable, truncated, of another format, or fails its checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with h5py.File(path, "r") as src:
            if "meta" not in src.attrs or "sha256" not in src.attrs:
                raise CheckpointError(f"checkpoint {path} is incomplete (no metadata/checksum)")
            meta = json.loads(src.attrs["meta"])
            expected = str(src.attrs["sha256"])
            arrays: dict[str, np.ndarray] = {}
            src.visititems(lambda name, node: arrays.__setitem__(name, node[()])
                           if isinstance(node, h5py.Dataset) else None)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mpiml checkpoint")
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    if _digest(arrays, meta) != expected:
        raise CheckpointError(f"checkpoint {path} fails its checksum (corrupted)")
    return Checkpoint(int(meta["step"]), arrays, meta)


def latest_valid(directory, lineage: str | None = None
                 ) -> tuple[Checkpoint | None, Path | None, list[str]]:
    """The newest checkpoint in ``directory`` that loads and verifies, its path, and one message
    per newer file that was skipped (corrupt, truncated...). With ``lineage``, only that run's
    checkpoints are considered (the others are not skipped: they belong to other runs)."""
    skipped = []
    for path in reversed(list_checkpoints(directory)):
        if lineage is not None:
            meta = read_meta(path)
            if meta is not None and meta.get("lineage") != lineage:
                continue
        try:
            return load(path), path, skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, None, skipped
