"""Checkpoint files: round trip, atomicity, retention, and refusal of damaged files."""

import os

import numpy as np
import pytest

from mpiml.files import checkpoint
from mpiml.files.checkpoint import Checkpoint, CheckpointError


def sample(step: int) -> Checkpoint:
    rng = np.random.default_rng(step)
    return Checkpoint(step, {"params": rng.standard_normal(50),
                             "opt/step": np.array(step, dtype=np.int64),
                             "opt/velocity": rng.standard_normal(50).astype(np.float32)},
                      {"epoch": 2, "config_digest": "abc"})


def test_round_trip_keeps_every_array_bit_for_bit(tmp_path):
    original = sample(7)
    path = checkpoint.save(tmp_path, original)
    assert path.name == "ckpt-0000000007.h5"
    loaded = checkpoint.load(path)
    assert loaded.step == 7 and loaded.meta["epoch"] == 2 and loaded.meta["config_digest"] == "abc"
    assert sorted(loaded.arrays) == sorted(original.arrays)
    for name, array in original.arrays.items():
        assert loaded.arrays[name].dtype == array.dtype
        assert loaded.arrays[name].tobytes() == array.tobytes()


def test_keep_retains_only_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, sample(step), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-0000000003.h5", "ckpt-0000000004.h5"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def flip_a_byte(path, offset_from_end=200):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_newest_checkpoint_is_skipped_and_reported(tmp_path, damage):
    checkpoint.save(tmp_path, sample(1))
    newest = checkpoint.save(tmp_path, sample(2))
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    elif damage == "flip":
        with open(newest, "r+b") as handle:  # corrupt the parameter bytes themselves
            raw = handle.read()
            offset = raw.find(sample(2).arrays["params"].tobytes()[:16])
            assert offset > 0
            handle.seek(offset)
            handle.write(bytes(b ^ 0xFF for b in raw[offset:offset + 8]))
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        newest.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=newest.name):
        checkpoint.load(newest)
    found, path, skipped = checkpoint.latest_valid(tmp_path)
    assert found.step == 1 and path.name == "ckpt-0000000001.h5"
    assert len(skipped) == 1 and newest.name in skipped[0]


def test_crash_during_write_leaves_previous_checkpoints_intact(tmp_path):
    checkpoint.save(tmp_path, sample(1))

    def crash():
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        checkpoint.save(tmp_path, sample(2), fault=crash)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-0000000001.h5"]
    assert checkpoint.latest_valid(tmp_path)[0].step == 1


def test_empty_or_missing_directory_has_no_checkpoint(tmp_path):
    assert checkpoint.latest_valid(tmp_path / "none") == (None, None, [])
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "ckpt-0000000009.h5")


def test_a_foreign_hdf5_file_is_refused(tmp_path):
    import h5py

    path = tmp_path / "ckpt-0000000005.h5"
    with h5py.File(path, "w") as out:
        out["params"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpoint.load(path)


def test_retention_never_deletes_the_checkpoint_just_written(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, sample(step), keep=2)
    written = checkpoint.save(tmp_path, sample(5), keep=2)
    assert written.exists()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-0000000005.h5", "ckpt-0000000030.h5"]


def test_set_aside_moves_old_checkpoints_into_a_subdirectory(tmp_path):
    for step in (1, 2):
        checkpoint.save(tmp_path, sample(step))
    moved = checkpoint.set_aside(tmp_path)
    assert checkpoint.list_checkpoints(tmp_path) == []
    assert sorted(p.name for p in moved.iterdir()) == ["ckpt-0000000001.h5", "ckpt-0000000002.h5"]
    assert checkpoint.set_aside(tmp_path) is None
