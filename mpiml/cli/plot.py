"""Training curves from a run directory: ``python -m mpiml.plot RUN_DIR [--out FILE.png]``.

Reads ``RUN_DIR/metrics.jsonl`` and draws, in one PNG (default ``RUN_DIR/curves.png``): the
training curves (loss per logged step and epoch, K-Means' inertia), the test and validation
metrics per evaluation (boosting: the validation loss per round), and the split of wall time
into computing and communicating. Needs matplotlib (in a checkout: ``pip install -e '.[plot]'``).
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


def curves(records: list[dict]) -> tuple[dict, dict]:
    """The lines to draw, ``label -> [(step, value), ...]``, of the training panel (the batch
    objective, each epoch's training loss, K-Means' inertia, boosting's training loss) and of
    the held-out panel (every test and validation metric, boosting's per-round validation
    loss), for every model kind's records."""
    training: dict[str, list] = {}
    held_out: dict[str, list] = {}
    for record in records:
        step = record.get("step")
        if step is None or record.get("event") == "done":
            continue
        for key, label in (("loss", "training objective (batch)"),
                           ("train_loss", "training loss"), ("inertia", "inertia")):
            if key in record:
                training.setdefault(label, []).append((step, record[key]))
        if "validation_loss" in record:
            held_out.setdefault("validation loss", []).append((step, record["validation_loss"]))
        for part in ("test", "validation"):
            for name, value in (record.get(part) or {}).items():
                if isinstance(value, (int, float)):
                    held_out.setdefault(f"{part} {name}", []).append((step, value))
    return training, held_out


def plot(run_dir: Path, out: Path) -> Path:
    """Render the curves of ``run_dir`` into ``out`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = latest_history(read_records(run_dir))
    training, held_out = curves(records)
    timed = [r for r in records if "compute_s" in r]
    figure, (ax_loss, ax_held, ax_time) = plt.subplots(1, 3, figsize=(15, 4))
    for axis, lines, title in ((ax_loss, training, "training"),
                               (ax_held, held_out, "held-out sets")):
        for label, points in sorted(lines.items()):
            style = "--" if label.startswith("validation") else "-"
            axis.plot(*zip(*points, strict=True), style, marker="o" if len(points) < 50
                      else None, label=label)
        axis.set(xlabel="step", title=title)
        if lines:
            axis.legend(loc="best")
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
