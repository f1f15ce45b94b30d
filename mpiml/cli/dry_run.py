"""``mpiml-train CONFIG --dry-run``: what a training job would hold, without training.

Every rank reads the config and its rows exactly as training does (so bad data fail with the
same one-line errors), then rank 0 prints the rows per rank, the features, the classes, the
steps per epoch and the estimated memory per rank. Nothing is written: no ``output.dir``, no
lock, no checkpoint.

The memory estimate is the sum of three parts, per rank (the largest is printed):

* data -- the bytes of the arrays this rank holds once its rows are loaded: X (dense: rows x
  features x itemsize; CSR: values, column indices and row pointers) and y, of the training,
  validation and test rows (measured, not estimated); training rows that stream
  (``data.memory_budget``) count as the budget, which bounds what streaming holds, and the
  report says that they stream;
* model -- parameter-vector models: the parameters, the gradient and the optimizer's state
  vectors (momentum, nesterov, adagrad: 1; adam: 2; lbfgs: 2 x ``optimizer.history``), 8 bytes
  each; K-Means: the centres, twice; boosted trees: every tree at full depth;
* working arrays -- what the loop keeps beside them: parameter-vector models, the step's
  reduction buffer, one mini-batch's copy of this rank's rows (at most ``train.batch_size``
  rows) and the MLP's activations and their gradients for the rows of a step; K-Means, each
  row's cluster, distance and norm and the statistics buffer; boosted trees, the binned
  features (1 byte per value), each row's scores, gradients, hessians and node per output, and
  one tree level's histograms.

Temporaries the arithmetic makes a tile of rows at a time (about a MiB each) are not counted.
"""

from __future__ import annotations

import math

import scipy.sparse as sp

#: Vectors the size of the parameters that each optimizer keeps (lbfgs: per ``history``).
STATE_VECTORS = {"momentum": 1, "nesterov": 1, "adagrad": 1, "adam": 2}
#: float64 entries per row of the parameter-vector models' step beyond the rows themselves.
CONTROL_SLOTS = 4


def describe_run(path, config, comm) -> None:
    """Read the rows of ``config`` (resolved from the file ``path``) on every rank of ``comm``
    and print, on rank 0, what training would hold; collective. Raises what training would
    raise on bad data."""
    from ..comm import Reducer, allgather_object
    from ..data.run_rows import load_run_data
    from ..models.kinds import KINDS

    reducer = Reducer(comm, config.comm.algorithm, config.comm.ring_threshold,
                      config.block_rows)
    rows = load_run_data(config, reducer, KINDS[config.model.kind].task)
    parts = {name: part for name, part in (("train", rows.shard), ("validation", rows.validation),
                                           ("test", rows.test)) if part is not None}
    reports = allgather_object(({name: part.n_local for name, part in parts.items()},
                                memory_estimate(config, rows)), comm)
    if comm.Get_rank() == 0:
        print(report(path, config, rows, parts, reports), flush=True)


def report(path, config, rows, parts, reports) -> str:
    """The lines rank 0 prints: ``reports`` holds every rank's (rows per part, memory)."""
    lines = [f"mpiml: dry run of {path} on {len(reports)} ranks (nothing trained or written)"]
    for name, part in parts.items():
        counts = [local[name] for local, _ in reports]
        lines.append(f"{name} rows: {part.n_total} ({per_rank(counts)})")
    lines.append(f"features: {rows.shard.n_features}")
    from ..data.stream import describe

    streaming = describe(rows.shard.X)
    if streaming:
        lines.append(streaming)
    lines.append(f"classes: {classes_line(config, rows)}")
    per_epoch, total, what = steps(config, rows.shard.n_total)
    lines.append(f"steps per epoch: {per_epoch}; steps in all: at most {total} ({what})")
    largest = max((memory for _, memory in reports), key=lambda memory: sum(memory.values()))
    lines.append(f"memory per rank (estimate, largest rank): {size(sum(largest.values()))} = "
                 + " + ".join(f"{name} {size(value)}" for name, value in largest.items()))
    return "\n".join(lines)


def per_rank(counts: list[int]) -> str:
    """``rank 0: 334, ranks 1-2: 333``: consecutive ranks with the same count grouped."""
    groups: list[list[int]] = []  # [first rank, last rank, count]
    for rank, count in enumerate(counts):
        if groups and groups[-1][2] == count:
            groups[-1][1] = rank
        else:
            groups.append([rank, rank, count])
    return ", ".join(f"rank {first}: {count}" if first == last
                     else f"ranks {first}-{last}: {count}" for first, last, count in groups)


def classes_line(config, rows) -> str:
    if rows.task == "regression":
        return "none (regression)"
    if rows.task == "unsupervised":
        return f"none (unsupervised; {config.kmeans.n_clusters} clusters)"
    shown = ", ".join(str(label) for label in rows.classes[:10])
    return f"{len(rows.classes)} ({shown}{', ...' if len(rows.classes) > 10 else ''})"


def steps(config, n_total: int) -> tuple[int, int, str]:
    """Steps per epoch, the most steps the run takes (early stopping may take fewer) and what
    a step is, as the loops count them: mini-batches, L-BFGS iterations, K-Means iterations or
    batches (over ``kmeans.n_init`` fits), boosting rounds."""
    from ..fit.lbfgs import DEFAULT_LBFGS_ITERATIONS
    from ..models.kinds import KINDS

    family = KINDS[config.model.kind].family
    if family == "hgbt":
        return 1, config.hgbt.n_estimators, "boosting rounds, each over every row"
    if family == "kmeans":
        cfg = config.kmeans
        fits = 1 if cfg.init_file else cfg.n_init
        per_epoch = -(-n_total // cfg.batch_size) if cfg.batch_size else 1
        what = (f"mini-batches of {cfg.batch_size} rows" if cfg.batch_size
                else "Lloyd iterations, each over every row")
        if fits > 1:
            what += f", in each of {fits} fits"
        return per_epoch, per_epoch * cfg.max_iter * fits, what
    train = config.train
    if config.optimizer.name == "lbfgs":
        return 1, train.max_steps or DEFAULT_LBFGS_ITERATIONS, "L-BFGS iterations, full batch"
    if not train.batch_size:
        per_epoch, what = 1, "full batch"
    else:  # reproducible mode batches whole blocks of block_rows rows
        block = config.block_rows
        n_blocks = -(-n_total // block)
        per_epoch = -(-n_blocks // (train.batch_size // block))
        what = f"mini-batches of {train.batch_size} rows"
    total = per_epoch * train.epochs
    return per_epoch, min(total, train.max_steps) if train.max_steps else total, what


def memory_estimate(config, rows) -> dict[str, int]:
    """This rank's bytes by part -- data, model, working arrays -- as the module docstring
    says."""
    from ..data.stream import is_streamed
    from ..models.kinds import KINDS

    data = sum(array_bytes(part.X) + (0 if part.y is None else part.y.nbytes)
               for part in (rows.shard, rows.validation, rows.test) if part is not None)
    if is_streamed(rows.shard.X):  # held a chunk at a time, within the budget
        data += config.data.memory_budget - array_bytes(rows.shard.X)
    family = KINDS[config.model.kind].family
    shard = rows.shard
    n_local, d = shard.n_local, shard.n_features
    if family == "kmeans":
        k = config.kmeans.n_clusters
        model = 2 * k * d * 8
        work = n_local * 3 * 8 + (k * d + k + 1) * 8
    elif family == "hgbt":
        cfg = config.hgbt
        outputs = 1 if rows.task == "regression" or rows.n_classes == 2 else rows.n_classes
        leaves = max(1, shard.n_total // cfg.min_samples_leaf)  # the most any tree can have
        if cfg.max_leaf_nodes is not None:
            leaves = min(leaves, cfg.max_leaf_nodes)
        if cfg.max_depth is not None:
            leaves = min(leaves, 2 ** cfg.max_depth)
        model = cfg.n_estimators * outputs * (2 * leaves - 1) * 6 * 8
        histograms = 3 * outputs * leaves * d * (cfg.max_bins + 1) * 8  # a leaf's each, at most
        work = n_local * (d + outputs * 6 * 8) + histograms
    else:
        from ..fit.gradient import build_model

        n_params = build_model(config, rows).n_params
        name = config.optimizer.name
        state = 2 * config.optimizer.history if name == "lbfgs" else STATE_VECTORS.get(name, 0)
        model = (2 + state) * n_params * 8
        work = (n_params + CONTROL_SLOTS) * 8
        batch = None if name == "lbfgs" else config.train.batch_size
        batch_rows = min(batch, n_local) if batch else 0  # copied for each mini-batch
        work += math.ceil(batch_rows * (array_bytes(shard.X) / max(n_local, 1) + 8))
        if family == "mlp":  # activations and their gradients, of every row of a step
            work += (batch_rows or n_local) * 2 * 8 * sum(config.model.hidden)
    return {"data": data, "model": model, "working arrays": work}


def array_bytes(X) -> int:
    """Bytes of a dense array or of a CSR matrix's three arrays (streamed rows: as if held)."""
    if sp.issparse(X):
        return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return X.nbytes


def size(n_bytes: int) -> str:
    """``n_bytes`` in B, KiB, MiB, GiB or TiB, three significant digits."""
    value, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n_bytes} B" if unit == "B" else f"{value:.3g} {unit}"
