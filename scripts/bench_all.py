"""Run every benchmark and write docs/benchmarks.md (tables) and docs/img/*.png (plots).

    python scripts/bench_all.py [--quick] [--out docs/benchmarks.md] [--img-dir docs/img]
                                [--data-dir data/bench] [--keep-json DIR]

``make bench`` runs it in full (5-15 minutes on the 2-core reference machine, depending on what
else runs there); ``make bench-quick`` and the CI smoke test run ``--quick`` (small data, one
repetition, under a minute) and write elsewhere. Each benchmark script runs as its own process
and hands back JSON (bench_reproducible.py and bench_ulfm.py print a markdown table, which is
taken as it is); this script turns the results into markdown and replaces the blocks between
``<!-- begin generated: NAME -->`` and ``<!-- end generated: NAME -->`` in ``--out`` (blocks
that are missing are appended), so the prose around them is kept. Benchmark data are written
by ``python -m mpiml.data synth`` into ``--data-dir`` (gitignored ``data/bench``; the quick mode
uses a temporary directory).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_startup
import benchlib

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent


def steps(quick: bool, data_dir: str) -> dict[str, list[str]]:
    """The command of every benchmark (without --json)."""
    py = sys.executable
    if quick:
        return {
            "allreduce": [py, str(SCRIPTS / "bench_allreduce.py"), "--quick", "--ranks", "2"],
            "data": [py, str(SCRIPTS / "bench_data.py"), "--rows", "20000", "--features", "20",
                     "--ranks", "1", "2"],
            "checkpoint": [py, str(SCRIPTS / "bench_checkpoint.py"), "--sizes-mb", "1", "4",
                           "--repeats", "1"],
            "training": [py, str(SCRIPTS / "bench_training.py"), "--quick", "--data-dir",
                         data_dir],
            "kmeans_hgbt": [py, str(SCRIPTS / "bench_kmeans_hgbt.py"), "--quick", "--data-dir",
                            data_dir],
            "startup": [py, str(SCRIPTS / "bench_startup.py"), "--quick", "--data-dir", data_dir],
            "out_of_core": [py, str(SCRIPTS / "bench_out_of_core.py"), "--quick"],
        }
    return {
        "allreduce": [py, str(SCRIPTS / "bench_allreduce.py"), "--ranks", "2", "4"],
        "data": [py, str(SCRIPTS / "bench_data.py")],
        "checkpoint": [py, str(SCRIPTS / "bench_checkpoint.py")],
        "training": [py, str(SCRIPTS / "bench_training.py"), "--data-dir", data_dir],
        "kmeans_hgbt": [py, str(SCRIPTS / "bench_kmeans_hgbt.py"), "--data-dir", data_dir],
        "startup": [py, str(SCRIPTS / "bench_startup.py"), "--data-dir", data_dir],
        "out_of_core": [py, str(SCRIPTS / "bench_out_of_core.py")],
    }


def text_steps(quick: bool) -> dict[str, list[str] | str]:
    """Benchmarks that print a markdown table (no JSON): the command, or why it is not run."""
    py = sys.executable
    out: dict[str, list[str] | str] = {
        "reproducible": [py, str(SCRIPTS / "bench_reproducible.py")]
        + (["--quick"] if quick else [])}
    ompi_python = ROOT / ".venv-ompi" / "bin" / "python"
    if quick:
        out["ulfm"] = "not run in --quick mode (it needs the Open MPI venv)"
    elif not ompi_python.exists():
        out["ulfm"] = f"not run: no Open MPI venv ({os.path.relpath(ompi_python, ROOT)}; `make " \
                      "test` creates it)"
    else:
        out["ulfm"] = [py, str(SCRIPTS / "bench_ulfm.py")]
    return out


def run_text_step(cmd: list[str] | str, env: dict) -> str:
    """Markdown of a table-printing benchmark: its command, the load, and its table lines; a
    failure is reported in the block instead of stopping the run."""
    if isinstance(cmd, str):
        return cmd[0].upper() + cmd[1:] + "."
    before = benchlib.load()
    job = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, check=False, timeout=1800)
    lines = job.stdout.splitlines()
    if job.returncode != 0:
        tail = "\n".join(lines[-5:])
        return f"`{shown(cmd)}` failed (exit {job.returncode}):\n\n```\n{tail}\n```"
    table = [line for line in lines if line.startswith("|")]
    return "\n".join([f"Command: `{shown(cmd)}` (load average {before} -> {benchlib.load()}).",
                      "", *table])


def shown(cmd: list[str]) -> str:
    """A command as a reader would type it (python and script paths relative to the repo)."""
    parts = ["python" if part == sys.executable else part for part in cmd]
    return " ".join(os.path.relpath(part, ROOT) if part.startswith(str(ROOT)) else part
                    for part in parts)


# -- formatting helpers ---------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def human(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


# -- blocks ---------------------------------------------------------------------------------------


def environment_block(info: dict) -> str:
    v = info["versions"]
    blas = "; ".join(f"{b['prefix']}{' ' + b['version'] if b['version'] else ''} "
                     f"({b['internal_api']}"
                     + (f", kernel {b['architecture']}" if b.get("architecture") else "") + ")"
                     for b in sorted(info["blas"], key=lambda b: b["internal_api"] != "openblas"))
    blas = blas or "unknown"
    coretype = ", ".join(f"{name}={os.environ[name]}" for name in
                         ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ)
    lines = [
        f"Run of `{info['command']}` on {info['date']} ({info['mode']} mode, "
        f"{info['seconds'] / 60:.1f} min): {os.cpu_count()} cores, {info['memory_gb']:.0f} GiB, "
        f"{info['platform']}.",
        "",
        "| | |",
        "|---|---|",
        f"| versions | Python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, mpi4py "
        f"{v['mpi4py']}, h5py {v['h5py']}, scikit-learn {v.get('scikit-learn', '-')}, "
        f"threadpoolctl {v.get('threadpoolctl', '-')}, numba {v.get('numba', '-')}, "
        f"scikit-learn-intelex {v.get('scikit-learn-intelex', '-')} |",
        f"| MPI library | {info['mpi']} (launcher `{os.path.relpath(info['mpiexec'], ROOT)}`) |",
        f"| BLAS (threadpoolctl) | {blas} |",
        "| threads | mpiml ranks: OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = 1; "
        "scikit-learn: threadpoolctl `threadpool_limits(1)` and `(2)` (2 = the number of mpiml "
        "ranks) |",
        f"| OPENBLAS_CORETYPE / L2_SIZE | {coretype or 'not set'} |",
        "| load average (1, 5, 15 min) | " + "; ".join(
            f"{name}: {before} -> {after}" for name, (before, after) in info["loads"].items())
        + " |",
    ]
    return "\n".join(lines)


def targets_block(r: dict) -> str:
    t, k = r["training"], r["kmeans_hgbt"]
    rows = ["| target (issues 9, 18) | measured | ratio | goal | verdict |",
            "|---|---|---:|---:|---|"]
    for kind, label in (("logistic", "logistic (binary)"), ("softmax", "softmax (10 classes)")):
        entry = t["lbfgs"][kind]
        mine, theirs = entry.get("mpiml_2r"), entry["sklearn_1t"]
        if mine and mine["reached"]:
            ratio = mine["reached"]["seconds"] / theirs["seconds"]
            rows.append(f"| L-BFGS {label}: time to scikit-learn's objective (1e-7), 2 ranks / "
                        f"`LogisticRegression(lbfgs)` 1 thread | {mine['reached']['seconds']:.2f}"
                        f" s / {theirs['seconds']:.2f} s | {ratio:.2f} | <= 0.5 | "
                        f"{verdict(ratio <= 0.5)} |")
        else:
            rows.append(f"| L-BFGS {label} | objective not reached | - | <= 0.5 | **missed** |")
        onedal, mine = entry.get("onedal_2t"), entry.get("mpiml_2r_to_onedal")
        if onedal is None:
            rows.append(f"| L-BFGS {label}, 2 ranks / oneDAL 2 threads | not installed | - | "
                        f"<= 0.8 | - |")
        elif mine is None:
            rows.append(f"| L-BFGS {label}: time to oneDAL's objective (1e-7), 2 ranks / oneDAL "
                        f"`LogisticRegression` 2 threads | objective not reached | - | <= 0.8 | "
                        f"**missed** |")
        else:
            ratio = mine["seconds"] / onedal["seconds"]
            rows.append(f"| L-BFGS {label}: time to oneDAL's objective (1e-7), 2 ranks / oneDAL "
                        f"`LogisticRegression` 2 threads | {mine['seconds']:.2f} s / "
                        f"{onedal['seconds']:.2f} s | {ratio:.2f} | <= 0.8 | "
                        f"{verdict(ratio <= 0.8)} |")
        one, two = entry.get("mpiml_1r"), entry.get("mpiml_2r")
        if one and two and one["reached"] and two["reached"]:
            efficiency = one["reached"]["seconds"] / (2 * two["reached"]["seconds"])
            rows.append(f"| L-BFGS {label}: strong scaling 1 -> 2 ranks (time to scikit-learn's "
                        f"objective) | {one['reached']['seconds']:.2f} s -> "
                        f"{two['reached']['seconds']:.2f} s | {efficiency:.2f} efficiency | "
                        f">= 0.9 | {verdict(efficiency >= 0.9)} |")
    gd2, gd1 = t["gd_2r"], t["gd_1r"]
    share = gd2["floor"] / gd2["step"]
    rows.append(f"| full-batch gradient step (2 ranks, `optimizer.name: gd`) vs streaming floor "
                f"`X @ w` + `X.T @ r` | {ms(gd2['step'])} ms / {ms(gd2['floor'])} ms | "
                f"{share:.2f} of floor speed | >= 0.70 | {verdict(share >= 0.7)} |")
    sgd = t["sgd"]
    ratio = sgd["mpiml"]["epoch"] / sgd["sklearn"]["epoch"]
    ok = ratio <= 0.5 and sgd["mpiml"]["accuracy"] >= sgd["sklearn"]["accuracy"]
    rows.append(f"| mini-batch SGD epoch, 2 ranks / `SGDClassifier` (test accuracy "
                f"{sgd['mpiml']['accuracy']:.4f} vs {sgd['sklearn']['accuracy']:.4f}) | "
                f"{ms(sgd['mpiml']['epoch'])} ms / {ms(sgd['sklearn']['epoch'])} ms | "
                f"{ratio:.2f} | <= 0.5, accuracy >= | {verdict(ok)} |")
    km = k["kmeans"]["mpiml_2r"]
    for name, label, goal in (("onedal_2t", "oneDAL `KMeans` (scikit-learn-intelex)", 1.0),
                              ("sklearn_2t", "scikit-learn `KMeans`", 0.5)):
        theirs = k["kmeans"].get(name)
        if theirs is None:
            rows.append(f"| K-Means Lloyd iteration, 2 ranks / {label} 2 threads | not "
                        f"installed | - | <= {goal:g} | - |")
            continue
        ratio = km["iteration"] / theirs["iteration"]
        rows.append(f"| K-Means Lloyd iteration, 2 ranks / {label} 2 threads | "
                    f"{ms(km['iteration'])} ms / {ms(theirs['iteration'])} ms | {ratio:.2f} | "
                    f"<= {goal:g} | {verdict(ratio <= goal)} |")
    for setting in ("depth 6", "31 leaves"):  # issue 18: <= 1.0x LightGBM with 2 threads
        hg = k["hgbt"][f"mpiml_2r {setting}"]
        for reference, label, goal in (("lightgbm_2t", "LightGBM", 1.0),
                                       ("xgboost_2t", "XGBoost (`hist`)", None),
                                       ("sklearn_2t", "`HistGradientBoostingClassifier`", None)):
            theirs = k["hgbt"].get(f"{reference} {setting}")
            if theirs is None:
                rows.append(f"| boosting ({setting}): time per tree, 2 ranks / {label} 2 threads"
                            f" | not installed | - | {f'<= {goal:g}' if goal else '-'} | - |")
                continue
            if reference == "lightgbm_2t":  # issue 18: accuracy within 0.003 of LightGBM's
                gap = theirs["accuracy"] - hg["accuracy"]
                rows.append(f"| boosting ({setting}): test accuracy, mpiml / LightGBM | "
                            f"{hg['accuracy']:.4f} / {theirs['accuracy']:.4f} | {-gap:+.4f} | "
                            f">= -0.003 | {verdict(gap <= 0.003)} |")
            for what, key in (("time per tree", "tree"), ("per tree with binning",
                                                          "with_binning")):
                ratio = hg[key] / theirs[key]
                judged = (f"<= {goal:g} | {verdict(ratio <= goal)}" if goal
                          else "(reported) | -")
                rows.append(f"| boosting ({setting}): {what}, 2 ranks / {label} 2 threads | "
                            f"{ms(hg[key])} ms / {ms(theirs[key])} ms | {ratio:.2f} | {judged} |")
    efficiency = gd1["step"] / (2 * gd2["step"])
    rows.append(f"| strong scaling 1 -> 2 ranks, full-batch gradient step | {ms(gd1['step'])} ms"
                f" -> {ms(gd2['step'])} ms | {efficiency:.2f} efficiency | >= 0.85 | "
                f"{verdict(efficiency >= 0.85)} |")
    ar = allreduce_summary(r["allreduce"])
    if ar:
        rows.append(f"| allreduce: ring / native for messages >= 1 MiB (issue 2) | see "
                    f"[allreduce](#allreduce-ring-tree-and-auto-vs-native-mpi) | "
                    f"{ar['ring_worst']:.2f} worst | <= 1.25 | "
                    f"{verdict(ar['ring_worst'] <= 1.25)} |")
        rows.append(f"| allreduce: auto / native, any size (issue 18) | | {ar['auto_worst']:.2f} "
                    f"worst | <= 1.05 | {verdict(ar['auto_worst'] <= 1.05)} |")
    for ranks in (2, 1):
        o = t.get(f"overhead_{ranks}r")
        if o is None:
            continue
        step = o["per_step"]
        extra = step - o["model"]
        rows.append(f"| per-step overhead of the loop, tiny model (d=10, batch 256), {ranks} "
                    f"rank{'s' if ranks > 1 else ''} | {us(step)} µs/step - {us(o['model'])} µs "
                    f"model | {us(extra)} µs | <= 100 µs | {verdict(extra <= 100e-6)} |")
    o = r["out_of_core"]
    for label, case in o["cases"].items():  # issue 18: within 1.5x of in-memory training
        ratio = case["in_memory"]["rows_per_s"] / case["streamed"]["rows_per_s"]
        rows.append(f"| out of core ({o['rows'] * o['features'] * 4 / 2**20:.0f} MiB of X, budget "
                    f"{o['budget'] / 2**20:.0f} MiB): {label}, streamed / in memory, warm page "
                    f"cache | {case['streamed']['rows_per_s']:,.0f} / "
                    f"{case['in_memory']['rows_per_s']:,.0f} rows/s | {ratio:.2f} | <= 1.5 | "
                    f"{verdict(ratio <= 1.5)} |")
    jobs = r["startup"]["jobs"]
    ranks = max(jobs, key=int)
    first_step = min(run["to_first_step"] for run in jobs[ranks])
    rows.append(f"| start-up: `mpiexec` to the first step of the demo job, {ranks} ranks "
                f"(issue 18: measured; per phase under Start-up) | {first_step:.3f} s | - | "
                f"(reported) | - |")
    ck = r["checkpoint"]
    if ck["rows"]:
        worst = max(ck["rows"], key=lambda row: row["write"])
        share = worst["write"] / ck["interval"]
        rows.append(f"| checkpointing share of training time at every_seconds="
                    f"{ck['interval']:g} ({worst['megabytes']:g} MB) | {worst['write']:.2f} s / "
                    f"{ck['interval']:g} s | {100 * share:.2f}% | <= 2% | "
                    f"{verdict(share <= 0.02)} |")
    return "\n".join(rows)


def out_of_core_block(o: dict, command: str) -> str:
    rows = [f"Command: `{command}` ({o['rows']:,} x {o['features']} float32 = "
            f"{o['rows'] * o['features'] * 4 / 2**20:.0f} MiB of X on one rank, "
            f"`data.memory_budget` {o['budget'] / 2**20:.0f} MiB, {o['passes']} passes from a "
            f"warm page cache, each case in a fresh process; load {o['load']:.2f}).", "",
            "| case | in memory, rows/s | streamed, rows/s | time ratio | CPU time ratio | "
            "peak RSS in memory | peak RSS streamed |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, case in o["cases"].items():
        held, streamed = case["in_memory"], case["streamed"]
        rows.append(f"| {label} | {held['rows_per_s']:,.0f} | {streamed['rows_per_s']:,.0f} | "
                    f"{held['rows_per_s'] / streamed['rows_per_s']:.2f} | "
                    f"{held['rows_per_cpu_s'] / streamed['rows_per_cpu_s']:.2f} | "
                    f"{human(held['peak_rss'])} | {human(streamed['peak_rss'])} |")
    return "\n".join(rows)


def training_block(t: dict) -> str:
    out = []
    w = t["workloads"]
    out.append(f"Data ({t['mode']}): " + "; ".join(f"`{t['data'][name]}`" for name in t["data"])
               + f". alpha = {t['alpha']:g} everywhere (scikit-learn C = 1/(N alpha)). Best of "
               f"{t['repeats']} alternating repetitions; load averages seen: "
               f"{', '.join(sorted(set(t['loads'])))}; cores busy with other jobs when each "
               f"repetition started: {busy_text(t)}.")
    out.append("")
    out.append("**L-BFGS: time to reach a peer's final objective.** scikit-learn "
               "`LogisticRegression(solver='lbfgs', C=1/(N alpha), max_iter=1000)` with its "
               "default `tol=1e-4` sets the objective; mpiml (`optimizer.name: lbfgs`, "
               "`train.batch_size: null`) counts from the start of the loop to the first iterate "
               "whose objective, re-evaluated in float64 by the same independent formula as "
               "scikit-learn's coefficients, is within 1e-7 (relative) of it. oneDAL's "
               "`LogisticRegression` (scikit-learn-intelex, same C, 2 threads) stops at an "
               "objective of its own; the last column times mpiml to that one.")
    out.append("")
    out.append("| model | scikit-learn 1 thread | scikit-learn 2 threads | oneDAL 2 threads | "
               "mpiml 1 rank | mpiml 2 ranks | 2 ranks / sklearn 1 thread | 2 ranks / sklearn "
               "2 threads | 2 ranks to oneDAL's objective / oneDAL |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, entry in t["lbfgs"].items():
        def cell(name, entry=entry):
            e = entry.get(name)
            if e is None:
                return "-", None
            if name.startswith(("sklearn", "onedal")):
                return (f"{e['seconds']:.2f} s ({e['iterations']} it, f = {e['objective']:.9f})",
                        e["seconds"])
            if not e["reached"]:
                return f"not reached in {e['iterations']} it", None
            return (f"{e['reached']['seconds']:.2f} s ({e['reached']['iterations']} it)",
                    e["reached"]["seconds"])
        cells = {name: cell(name) for name in ("sklearn_1t", "sklearn_2t", "onedal_2t",
                                               "mpiml_1r", "mpiml_2r")}
        to_onedal = entry.get("mpiml_2r_to_onedal")
        if to_onedal and entry.get("onedal_2t"):
            versus_onedal = (f"{to_onedal['seconds']:.2f} s ({to_onedal['iterations']} it) / "
                             f"{entry['onedal_2t']['seconds']:.2f} s = "
                             f"{to_onedal['seconds'] / entry['onedal_2t']['seconds']:.2f}")
        else:
            versus_onedal = "-"

        def ratio(a, b, cells=cells):
            x, y = cells[a][1], cells[b][1]
            return f"{x / y:.2f}" if x and y else "-"
        shape = w["binary"] if kind == "logistic" else w["multiclass"]
        out.append(f"| {kind} ({shape['rows']:,} x {shape['features']}) | "
                   + " | ".join(cells[name][0] for name in ("sklearn_1t", "sklearn_2t",
                                                            "onedal_2t", "mpiml_1r", "mpiml_2r"))
                   + f" | {ratio('mpiml_2r', 'sklearn_1t')} | {ratio('mpiml_2r', 'sklearn_2t')} "
                   f"| {versus_onedal} |")
    out.append("")
    gd2, gd1 = t["gd_2r"], t["gd_1r"]
    out.append("**Full-batch gradient and strong scaling** (logistic, binary data, float32; "
               "`optimizer.name: gd` step = gradient pass + allreduce + update; floor = "
               "`X @ w` then `X.T @ r` with numpy on the same shard, each rank at once; best "
               "step of the run).")
    out.append("")
    out.append("| ranks | rows/rank | loop step ms | model `loss_grad_sum` ms | floor ms | "
               "floor / step |")
    out.append("|---:|---:|---:|---:|---:|---:|")
    for ranks, gd in ((1, gd1), (2, gd2)):
        out.append(f"| {ranks} | {gd['rows_per_rank']:,} | {ms(gd['step'])} | "
                   f"{ms(gd['model_pass'])} | {ms(gd['floor'])} | {gd['floor'] / gd['step']:.2f} |")
    out.append("")
    out.append(f"Strong scaling efficiency 1 -> 2 ranks: {gd1['step'] / (2 * gd2['step']):.2f}.")
    out.append("")
    sgd = t["sgd"]
    out.append(f"**Mini-batch SGD** (logistic, binary data): mpiml `{sgd['mpiml']['epochs']}` "
               f"epochs of `{t['sgd_settings']['optimizer']}`, global batch "
               f"{t['sgd_settings']['batch_size']} ({sgd['mpiml']['steps_per_epoch']} steps per "
               f"epoch) on 2 ranks; scikit-learn `SGDClassifier(loss='log_loss', alpha, tol=None)`"
               f", epoch = (t(E) - t(1)) / (E - 1) for E = {sgd['sklearn']['epochs']}.")
    out.append("")
    out.append("| | epoch ms | test accuracy |")
    out.append("|---|---:|---:|")
    out.append(f"| mpiml, 2 ranks | {ms(sgd['mpiml']['epoch'])} | {sgd['mpiml']['accuracy']:.4f} |")
    out.append(f"| scikit-learn SGDClassifier | {ms(sgd['sklearn']['epoch'])} | "
               f"{sgd['sklearn']['accuracy']:.4f} |")
    out.append("")
    out.append(f"**Per-step overhead** (logistic, `{t['data']['tiny']}`, SGD, batch "
               f"{t['tiny_batch']}): step = best epoch time / steps; model = `loss_grad_sum` on "
               "the same batches, pre-gathered; gather = `BatchPlan.local_rows` + `Shard.batch`; "
               "allreduce = the step's `[grad | 4 control slots]` buffer alone.")
    out.append("")
    out.append("| ranks | step µs | model µs | overhead µs | of which gather µs | allreduce µs | "
               "rest of the loop µs |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for ranks in (1, 2):
        o = t.get(f"overhead_{ranks}r")
        if o is None:
            continue
        step = o["per_step"]
        extra = step - o["model"]
        out.append(f"| {ranks} | {us(step)} | {us(o['model'])} | {us(extra)} | {us(o['gather'])}"
                   f" | {us(o['allreduce'])} | {us(extra - o['gather'] - o['allreduce'])} |")
    return "\n".join(out)


def busy_text(result: dict) -> str:
    busy = result.get("busy") or {}
    return "; ".join(f"{name} {', '.join(f'{value:.1f}' for value in values)}"
                     for name, values in busy.items() if values) or "not measured"


def kmeans_hgbt_block(k: dict) -> str:
    out = [f"Data ({k['mode']}): " + "; ".join(f"`{k['data'][name]}`" for name in k["data"])
           + f". Best of {k['repeats']} alternating repetitions; load averages seen: "
           f"{', '.join(sorted(set(k['loads'])))}; cores busy with other jobs when each "
           f"repetition started: {busy_text(k)}.", ""]
    out.append(f"**K-Means** (k = {k['k']}, Lloyd, the same {k['k']} initial rows on both sides,"
               f" tol = 0, at most {k['iterations']} iterations).")
    out.append("")
    out.append("| | ms per iteration | iterations | inertia |")
    out.append("|---|---:|---:|---:|")
    labels = {"mpiml_2r": "mpiml, 2 ranks, compiled kernel",
              "mpiml_2r_numpy": "mpiml, 2 ranks, numpy reference (`MPIML_KERNELS=numpy`)",
              "sklearn_2t": "scikit-learn KMeans, 2 threads",
              "sklearn_1t": "scikit-learn KMeans, 1 thread",
              "onedal_2t": "oneDAL KMeans (scikit-learn-intelex), 2 threads"}
    for name, entry in k["kmeans"].items():
        label = labels.get(name, name)
        out.append(f"| {label} | {ms(entry['iteration'])} | {entry['n_iter']} | "
                   f"{entry['inertia']:.6g} |")
    out.append("")
    out.append(f"**Boosted trees** (binary data, {k['trees']} trees, settings "
               f"{k['hgbt_settings']}).")
    out.append("")
    out.append("| | ms per tree | binning, ms | ms per tree with binning | test accuracy |")
    out.append("|---|---:|---:|---:|---:|")
    for name, entry in k["hgbt"].items():
        label = (name.replace("mpiml_2r", "mpiml, 2 ranks,")
                 .replace("sklearn_2t", "HistGradientBoostingClassifier, 2 threads,")
                 .replace("lightgbm_2t", "LightGBM, 2 threads,")
                 .replace("xgboost_2t", "XGBoost (hist), 2 threads,"))
        out.append(f"| {label} | {ms(entry['tree'])} | {ms(entry['binning'])} | "
                   f"{ms(entry['with_binning'])} | {entry['accuracy']:.4f} |")
    return "\n".join(out)


def allreduce_summary(a: dict) -> dict | None:
    ring, auto = [], []
    for result in a["results"]:
        for nbytes, t in result["rows"]:
            auto.append(t["auto"] / t["native"])
            if nbytes >= 1 << 20:
                ring.append(t["ring"] / t["native"])
    if not auto:
        return None
    return {"ring_worst": max(ring) if ring else float("nan"), "auto_worst": max(auto)}


def allreduce_block(a: dict, command: str, plots: list[str]) -> str:
    out = [f"Command: `{command}` (float64 buffers, `validate=False`, every algorithm timed in "
           f"turn at each size, slowest rank's average over about {a['seconds']:g} s per "
           f"measurement, best of {a.get('rounds', 1)} rounds; auto = native below "
           f"{a['ring_threshold'] >> 20} MiB, ring from there)."]
    for result in a["results"]:
        p = result["ranks"]
        bus = 2 * (p - 1) / p
        ring = [t["ring"] / t["native"] for n, t in result["rows"] if n >= 1 << 20]
        auto = [t["auto"] / t["native"] for _, t in result["rows"]]
        out += ["", f"### {p} ranks ({result['library']}; load average {result['load_before']})",
                "", f"ring/native at >= 1 MiB: {min(ring):.2f}-{max(ring):.2f}; auto/native: "
                f"{min(auto):.2f}-{max(auto):.2f}." if ring else "", "",
                "| size | native µs | ring µs | tree µs | auto µs | ring/native | tree/native | "
                "auto/native | native GB/s | ring GB/s |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for nbytes, t in result["rows"]:
            out.append(
                f"| {human(nbytes)} | {t['native'] * 1e6:.1f} | {t['ring'] * 1e6:.1f} | "
                f"{t['tree'] * 1e6:.1f} | {t['auto'] * 1e6:.1f} | {t['ring'] / t['native']:.2f} "
                f"| {t['tree'] / t['native']:.2f} | {t['auto'] / t['native']:.2f} | "
                f"{bus * nbytes / t['native'] / 1e9:.2f} | {bus * nbytes / t['ring'] / 1e9:.2f} |")
    out += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(line for line in out if line is not None)


def data_block(d: dict) -> str:
    megabyte = 2**20
    out = [f"Command: `{d['command']}` ({d['rows']:,} x {d['features']} float32, "
           f"{d['file_bytes'] / megabyte:.0f} MB file written by synth in "
           f"{d['synth_seconds']:.1f} s; global batch {d['batch_size']} rows; warm page cache).",
           "",
           "| ranks | rows/rank | shard MB/rank | load s | baseline MB | peak RSS MB | (peak - "
           "baseline) / shard | epoch order ms | batch gather µs | batch gradient µs | load avg |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for result in d["results"]:
        ranks = result["ranks"]
        worst = max(ranks, key=lambda r: (r["peak"] - r["baseline"]) / r["shard_bytes"])

        def mean(key, ranks=ranks):
            return sum(r[key] for r in ranks) / len(ranks)
        out.append(
            f"| {result['size']} | {ranks[0]['rows']:,} | "
            f"{ranks[0]['shard_bytes'] / megabyte:.1f} | "
            f"{max(r['load_seconds'] for r in ranks):.2f} | {worst['baseline'] / megabyte:.0f} | "
            f"{worst['peak'] / megabyte:.0f} | "
            f"{(worst['peak'] - worst['baseline']) / worst['shard_bytes']:.3f} | "
            f"{mean('epoch_seconds') * 1e3:.1f} | {mean('gather_seconds') * 1e6:.0f} | "
            f"{mean('gradient_seconds') * 1e6:.0f} | {result['load_average']} |")
    return "\n".join(out)


def checkpoint_block(c: dict, command: str) -> str:
    out = [f"Command: `{command}` (best of {c['repeats']}).", "",
           "| checkpoint size | write s | write GB/s | load+verify s | share of training time "
           f"at every_seconds={c['interval']:g} | load avg |",
           "|---:|---:|---:|---:|---:|---|"]
    for row in c["rows"]:
        out.append(f"| {row['megabytes']:g} MB | {row['write']:.3f} | "
                   f"{row['megabytes'] / 1000 / row['write']:.2f} | {row['load']:.3f} | "
                   f"{100 * row['write'] / c['interval']:.3f}% | {row['load_average']} |")
    return "\n".join(out)


# -- plots ----------------------------------------------------------------------------------------


def plot_allreduce(a: dict, img_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for metric, ylabel, filename in (("latency", "latency (µs)", "allreduce_latency.png"),
                                     ("bandwidth", "bus bandwidth (GB/s)",
                                      "allreduce_bandwidth.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for result, style in zip(a["results"], ("-", "--", ":"), strict=False):
            p = result["ranks"]
            sizes = [n for n, _ in result["rows"]]
            for algorithm, color in (("native", "C0"), ("ring", "C1"), ("tree", "C2"),
                                     ("auto", "C3")):
                times = [t[algorithm] for _, t in result["rows"]]
                values = ([t * 1e6 for t in times] if metric == "latency" else
                          [2 * (p - 1) / p * n / t / 1e9 for n, t in zip(sizes, times,
                                                                         strict=True)])
                ax.plot(sizes, values, style, color=color, marker=".",
                        label=f"{algorithm}, {p} ranks")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if metric == "latency" else "linear")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"allreduce {metric} (float64, MPICH shared memory)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(img_dir / filename, dpi=110)
        plt.close(fig)
        names.append(filename)
    return names


def plot_time_to_objective(t: dict, img_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (kind, entry) in zip(axes, t["lbfgs"].items(), strict=True):
        target = t["targets"][kind]["sklearn_1t"]  # the issue-9 target the curves approach
        for name, color in (("mpiml_2r", "C0"), ("mpiml_1r", "C1")):
            run = entry.get(name)
            if not run or not run.get("curve"):
                continue
            times = [s for s, _ in run["curve"]]
            gaps = [(f - target) / target for _, f in run["curve"]]
            label = f"mpiml, {name[-2]} rank{'s' if name[-2] != '1' else ''}"
            ax.plot(times, gaps, marker=".", color=color, label=label)
        for name, marker, label in (("sklearn_1t", "s", "scikit-learn lbfgs, 1 thread"),
                                    ("sklearn_2t", "^", "scikit-learn lbfgs, 2 threads"),
                                    ("onedal_2t", "D", "oneDAL, 2 threads")):
            run = entry.get(name)
            if run:
                ax.plot([run["seconds"]], [(run["objective"] - target) / target], marker,
                        color="C3" if name != "onedal_2t" else "C2", markersize=8,
                        label=f"{label}, final")
        ax.axhline(t.get("rel_tol", 1e-7), color="grey", linestyle="--", linewidth=1,
                   label="target: within 1e-7")
        ax.set_yscale("symlog", linthresh=1e-9)
        ax.set_xlabel("seconds since fit() started")
        ax.set_ylabel("(objective - scikit-learn's final) / scikit-learn's final")
        ax.set_title(f"L-BFGS, {kind}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img_dir / "time_to_objective.png", dpi=110)
    plt.close(fig)
    return ["time_to_objective.png"]


# -- document -------------------------------------------------------------------------------------


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        begin, end = f"<!-- begin generated: {name} -->", f"<!-- end generated: {name} -->"
        block = f"{begin}\n{body.strip()}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, block=block: block, text)
        else:
            text = text.rstrip("\n") + f"\n\n## {name}\n\n{block}\n"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small data, one repetition, no 4-rank allreduce (< 1 minute)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--img-dir", help="where the PNG plots go (default: img/ beside --out)")
    parser.add_argument("--data-dir", help="synth files (default data/bench; quick: a temp dir)")
    parser.add_argument("--mpiexec", default=benchlib.default_mpiexec())
    parser.add_argument("--keep-json", help="also keep every benchmark's JSON in this directory")
    args = parser.parse_args()
    out = Path(args.out)
    img_dir = Path(args.img_dir) if args.img_dir else out.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-all-") as scratch:
        data_dir = args.data_dir or (os.path.join(scratch, "data") if args.quick
                                     else str(ROOT / "data" / "bench"))
        json_dir = Path(args.keep_json or scratch)
        json_dir.mkdir(parents=True, exist_ok=True)
        results, loads, commands = {}, {}, {}
        env = benchlib.thread_env(1)
        for name, cmd in steps(args.quick, data_dir).items():
            if "--mpiexec" not in cmd and name not in ("checkpoint", "out_of_core"):
                cmd = cmd + ["--mpiexec", args.mpiexec]
            commands[name] = shown(cmd)
            path = json_dir / f"{name}.json"
            before = benchlib.load()
            print(f"==> [{time.perf_counter() - started:5.0f} s] {commands[name]} (load "
                  f"{before})", flush=True)
            subprocess.run(cmd + ["--json", str(path)], env=env, check=True,
                           stdout=subprocess.DEVNULL if args.quick else None)
            loads[name] = (before, benchlib.load())
            results[name] = json.loads(path.read_text())
        texts = {}
        for name, cmd in text_steps(args.quick).items():
            print(f"==> [{time.perf_counter() - started:5.0f} s] "
                  f"{cmd if isinstance(cmd, str) else shown(cmd)}", flush=True)
            texts[name] = run_text_step(cmd, env)
    info = {"command": "python scripts/bench_all.py" + (" --quick" if args.quick else ""),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "mode": "quick" if args.quick else "full", "seconds": time.perf_counter() - started,
            "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "platform": f"{platform.system()} {platform.release()}",
            "versions": benchlib.versions(), "blas": benchlib.blas_info(),
            "mpi": results["training"].get("mpi") or benchlib.mpi_library(args.mpiexec),
            "mpiexec": args.mpiexec, "loads": loads}
    plots = plot_allreduce(results["allreduce"], img_dir)
    plots_training = plot_time_to_objective(results["training"], img_dir)
    rel = os.path.relpath(img_dir, out.parent)
    blocks = {
        "environment": environment_block(info),
        "targets": targets_block(results),
        "training": training_block(results["training"]) + "\n\n"
        + "\n".join(f"![{name}]({rel}/{name})" for name in plots_training),
        "kmeans-hgbt": kmeans_hgbt_block(results["kmeans_hgbt"]),
        "allreduce": allreduce_block(results["allreduce"], commands["allreduce"],
                                     [f"{rel}/{name}" for name in plots]),
        "data": data_block(results["data"]),
        "checkpoint": checkpoint_block(results["checkpoint"], commands["checkpoint"]),
        "startup": bench_startup.table(results["startup"]),
        "out-of-core": out_of_core_block(results["out_of_core"], commands["out_of_core"]),
        **texts,
    }
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    out.write_text(replace_blocks(text, blocks))
    print(f"==> wrote {out} and {len(plots) + len(plots_training)} plots in {img_dir} "
          f"({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
