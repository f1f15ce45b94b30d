"""Training curves from a run directory: ``python -m mpiml.plot RUN_DIR [--out FILE.png]``.

Reads ``RUN_DIR/metrics.jsonl`` and draws, in one PNG (default ``RUN_DIR/curves.png``): the
training loss per logged step, the test metrics per evaluation, and the split of wall time into
computing and communicating. Needs matplotlib (in a checkout: ``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import add_version


def read_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return records


def latest_history(records: list[dict]) -> list[dict]:
    """The records of the latest training: from the last fresh start on, resumed segments
    included (a run directory's metrics.jsonl keeps every run appended)."""
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"]
    for first, start in enumerate(reversed(starts)):
        end = starts[len(starts) - first] if first else len(records)
        if not any(r.get("event") == "resume" for r in records[start:end]):
            return records[start:]
    return records


def plot(run_dir: Path, out: Path) -> Path:
    """Render the curves of ``run_dir`` into ``out`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = latest_history(read_records(run_dir))
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
    tests = [(r["step"], r["test"]) for r in records
             if isinstance(r.get("test"), dict) and r["test"] and r.get("event") != "done"]
    timed = [r for r in records if "compute_s" in r]
    figure, (ax_loss, ax_test, ax_time) = plt.subplots(1, 3, figsize=(15, 4))
    if losses:
        ax_loss.plot(*zip(*losses, strict=True), label="training objective (batch)")
    epochs = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    if epochs:
        ax_loss.plot(*zip(*epochs, strict=True), "o-", label="training loss (epoch)")
    ax_loss.set(xlabel="step", ylabel="loss", title="training")
    ax_loss.legend(loc="best")
    for name in sorted({key for _, metrics in tests for key in metrics}):
        points = [(step, metrics[name]) for step, metrics in tests if name in metrics]
        ax_test.plot(*zip(*points, strict=True), "o-", label=name)
    ax_test.set(xlabel="step", title="test set")
    if tests:
        ax_test.legend(loc="best")
    if timed:
        steps = [r["step"] for r in timed]
        ax_time.stackplot(steps, [r["compute_s"] for r in timed], [r["comm_s"] for r in timed],
                          labels=["compute", "communicate"])
        ax_time.legend(loc="upper left")
    ax_time.set(xlabel="step", ylabel="seconds (cumulative)", title="time")
    figure.suptitle(str(run_dir))
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(argv=None) -> int:
    parser = add_version(argparse.ArgumentParser(prog="mpiml-plot",
                                                 description=__doc__.splitlines()[0]))
    parser.add_argument("run_dir", type=Path, help="a run's output.dir (holds metrics.jsonl)")
    parser.add_argument("--out", type=Path, help="PNG to write (default: RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.stderr.write("mpiml: error: plotting needs matplotlib: pip install matplotlib (or, "
                         "in an mpiml checkout, pip install -e '.[plot]')\n")
        return 1
    try:
        out = plot(args.run_dir, args.out or args.run_dir / "curves.png")
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"mpiml: error: {exc}\n")
        return 1
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
