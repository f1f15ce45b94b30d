"""``synth``: a synthetic data set drawn from a hidden model fixed by the seed, written in bounded
memory; the bytes depend only on the arguments (each block of ``SYNTH_UNIT_ROWS`` rows has its
own random stream), never on how many rows go into one HDF5 write."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ...files.atomic import atomic_hdf5
from .writing import Progress, RowAppender, rows_per_write

SYNTH_TASKS = ("binary", "multiclass", "regression", "blobs")
#: Rows per random stream in ``synth``: row block u is drawn from ``default_rng([seed, part, u])``.
SYNTH_UNIT_ROWS = 512


@dataclass
class _HiddenModel:
    """The model a synthetic data set is drawn from; fixed by the seed alone."""

    task: str
    n_features: int
    density: float
    noise: float
    coef: np.ndarray  # (outputs, features); blobs: the cluster centres (classes, features)
    intercept: np.ndarray

    @classmethod
    def draw(cls, task: str, n_features: int, n_classes: int, informative: int, noise: float,
             density: float, seed: int) -> _HiddenModel:
        rng = np.random.default_rng([seed, 0])
        chosen = np.sort(rng.choice(n_features, size=informative, replace=False))
        outputs = n_classes if task in ("multiclass", "blobs") else 1
        coef = np.zeros((outputs, n_features))
        if task == "blobs":
            coef[:, chosen] = 4.0 * rng.standard_normal((outputs, informative))
            intercept = np.zeros(outputs)
        else:
            # informative scores have standard deviation 3 whatever the width and density
            scale = 3.0 / math.sqrt(informative * density)
            coef[:, chosen] = scale * rng.standard_normal((outputs, informative))
            spread = 1.0 if task == "regression" else 0.5
            intercept = spread * rng.standard_normal(outputs)
        return cls(task, n_features, density, noise, coef, intercept)

    def rows(self, rng: np.random.Generator, n_rows: int):
        """``n_rows`` rows (dense float64 array or CSR triple) and their labels."""
        if self.task == "blobs":
            labels = rng.integers(len(self.coef), size=n_rows)
            X = self.coef[labels] + self.noise * rng.standard_normal((n_rows, self.n_features))
            return X, labels.astype(np.int64)
        if self.density < 1.0:
            values, columns, lengths = _bernoulli_cells(rng, n_rows, self.n_features,
                                                        self.density)
            indptr = np.concatenate(([0], np.cumsum(lengths)))
            X = (values, columns, lengths)
            matrix = scipy.sparse.csr_matrix((values, columns, indptr),
                                             shape=(n_rows, self.n_features))
        else:
            X = matrix = rng.standard_normal((n_rows, self.n_features))
        scores = np.asarray(matrix @ self.coef.T) + self.intercept
        scores += self.noise * rng.standard_normal(scores.shape)
        if self.task == "regression":
            return X, scores[:, 0]
        if self.task == "binary":
            return X, (scores[:, 0] > 0).astype(np.int64)
        return X, np.argmax(scores, axis=1).astype(np.int64)


def _bernoulli_cells(rng: np.random.Generator, n_rows: int, n_features: int, density: float):
    """CSR triple of an ``n_rows x n_features`` matrix whose cells are nonzero with probability
    ``density``, values standard normal. Geometric gaps between nonzero cells give exactly that
    Bernoulli pattern in time and memory proportional to the nonzeros, not to the cells."""
    cells = n_rows * n_features
    expected = cells * density
    batch = int(expected + 4 * math.sqrt(expected) + 16)
    found, last = [], -1
    while last < cells:
        positions = last + np.cumsum(rng.geometric(density, size=batch))
        found.append(positions)
        last = int(positions[-1])
    positions = np.concatenate(found)
    positions = positions[positions < cells]
    rows, columns = np.divmod(positions, n_features)
    values = rng.standard_normal(len(positions))
    return values, columns.astype(np.int32), np.bincount(rows, minlength=n_rows)


def synth(out, task: str, rows: int, features: int, *, seed: int, classes: int | None = None,
          informative: int | None = None, noise: float = 1.0, density: float = 1.0,
          test_rows: int = 0, dtype="float32", chunk_rows: int | None = None,
          progress: bool = False) -> None:
    """Write a synthetic data set (X, y and optionally X_test, y_test) to the HDF5 file ``out``.

    The hidden model: ``informative`` features (default min(features, 10) for dense data, all
    for sparse) carry weights that give scores of standard deviation 3; ``noise`` is the
    standard deviation of Gaussian noise on the regression target, on the logits (binary:
    label = score > 0; multiclass: argmax), or around the cluster centres (blobs, y = the true
    cluster). ``density < 1`` writes CSR X.
    Memory stays near ``chunk_rows`` rows (default about 4 MB) whatever ``rows`` is.
    """
    n_classes = _check_synth_args(task, rows, features, classes, informative, noise, density,
                                  test_rows, seed, dtype)
    if informative is None:  # sparse rows hold few nonzeros: let every feature count
        informative = min(features, 10) if density == 1.0 else features
    dtype = np.dtype(dtype)
    model = _HiddenModel.draw(task, features, n_classes, informative, noise, density, seed)
    sparse = density < 1.0
    chunk_rows = chunk_rows or rows_per_write(int(features * density) or 1, dtype.itemsize)
    label_dtype = np.float64 if task == "regression" else np.int64
    counter = Progress("synth", rows + test_rows, progress)
    with atomic_hdf5(out) as handle:
        for part, (x_name, y_name, n_rows) in enumerate(
                (("X", "y", rows), ("X_test", "y_test", test_rows)), start=1):
            if n_rows == 0:
                continue
            appender = RowAppender(handle, x_name, y_name, n_features=features, dtype=dtype,
                                    sparse=sparse, label_dtype=label_dtype,
                                    chunk_rows=chunk_rows, index_dtype=np.int32)
            for unit, begin in enumerate(range(0, n_rows, SYNTH_UNIT_ROWS)):
                size = min(SYNTH_UNIT_ROWS, n_rows - begin)
                X, y = model.rows(np.random.default_rng([seed, part, unit]), size)
                if sparse:
                    X = (X[0].astype(dtype), X[1], X[2])
                else:
                    X = X.astype(dtype)
                appender.append(X, y)
                counter.advance(size)
            appender.finish(features)
        hidden = handle.create_group("hidden_model")
        if task == "blobs":
            hidden["centers"] = model.coef
        else:
            hidden["coef"] = model.coef
            hidden["intercept"] = model.intercept
        handle.attrs.update({
            "created_by": "mpiml.data synth", "task": task, "seed": seed, "rows": rows,
            "features": features, "informative": informative, "noise": noise,
            "density": density, "test_rows": test_rows, "dtype": dtype.name,
            "unit_rows": SYNTH_UNIT_ROWS, "layout": "csr" if sparse else "dense",
        })
        if task != "regression":
            handle.attrs["n_classes"] = n_classes
    counter.finish()


def _check_synth_args(task, rows, features, classes, informative, noise, density, test_rows,
                      seed, dtype) -> int:
    """Validate synth's arguments; return the number of classes (1 for regression)."""
    if task not in SYNTH_TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(SYNTH_TASKS)}")
    for name, value, least in (("rows", rows, 1), ("features", features, 1),
                               ("test_rows", test_rows, 0), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
    if informative is not None and not 1 <= informative <= features:
        raise ValueError(f"informative must be between 1 and features ({features}); "
                         f"got {informative}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1]; got {density}")
    if not 0.0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0; got {noise}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}")
    if task == "blobs" and density < 1.0:
        raise ValueError("blobs are dense: density must be 1")
    if task == "regression":
        if classes is not None:
            raise ValueError("classes has no meaning for task 'regression'")
        return 1
    if task == "binary":
        if classes not in (None, 2):
            raise ValueError(f"task 'binary' has 2 classes; got classes={classes}")
        return 2
    n_classes = 3 if classes is None else classes
    if n_classes < 2:
        raise ValueError(f"task {task!r} needs classes >= 2; got {n_classes}")
    return n_classes
