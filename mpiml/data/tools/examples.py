"""``example``: scikit-learn's bundled data sets (never a download) with a fixed train/test
split, and the generated ``line`` set (y = 2x + 1 + noise)."""

from __future__ import annotations

import numpy as np

from ...files.atomic import atomic_hdf5
from ..shard import DataError

EXAMPLES = {
    "breast_cancer": ("load_breast_cancer", "binary"),
    "digits": ("load_digits", "multiclass"),
    "diabetes": ("load_diabetes", "regression"),
    "wine": ("load_wine", "multiclass"),
    "line": (None, "regression"),  # generated: y = 2x + 1 + noise (needs no scikit-learn)
}
LINE_ROWS, LINE_TEST_ROWS, LINE_NOISE = 10_000, 2_000, 0.5
EXAMPLE_TEST_FRACTION = 0.25
EXAMPLE_SPLIT_SEED = 0


def write_line_example(out) -> None:
    """The classic first distributed regression: x ~ U(-5, 5), y = 2x + 1 + N(0, 0.5^2),
    10,000 training and 2,000 test rows (seed 0); a fit must recover slope 2 and intercept 1."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-5.0, 5.0, size=(LINE_ROWS + LINE_TEST_ROWS, 1))
    y = 2.0 * x[:, 0] + 1.0 + rng.normal(0.0, LINE_NOISE, size=len(x))
    with atomic_hdf5(out) as handle:
        handle["X"], handle["y"] = x[:LINE_ROWS], y[:LINE_ROWS]
        handle["X_test"], handle["y_test"] = x[LINE_ROWS:], y[LINE_ROWS:]
        handle.attrs.update({"created_by": "mpiml.data example", "source": "y = 2x + 1 + noise",
                             "task": "regression", "noise": LINE_NOISE})


def write_example(name: str, out) -> None:
    """Write scikit-learn's bundled data set ``name`` (never a download) to ``out``: X, y,
    X_test, y_test from a fixed stratified split (classification) of 25 % for testing.
    ``line`` is generated instead (:func:`write_line_example`)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    if name == "line":
        write_line_example(out)
        return
    try:
        import sklearn.datasets
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise DataError("the 'example' command needs scikit-learn, which is not installed "
                        "(pip install scikit-learn)") from exc
    loader, task = EXAMPLES[name]
    bunch = getattr(sklearn.datasets, loader)()
    label_dtype = np.float64 if task == "regression" else np.int64
    X, y = bunch.data.astype(np.float64), bunch.target.astype(label_dtype)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=EXAMPLE_TEST_FRACTION, random_state=EXAMPLE_SPLIT_SEED,
        stratify=None if task == "regression" else y)
    with atomic_hdf5(out) as handle:
        for key, array in (("X", X_train), ("y", y_train), ("X_test", X_test),
                           ("y_test", y_test)):
            handle[key] = array
        handle.attrs.update({
            "created_by": "mpiml.data example", "source": f"sklearn.datasets.{loader}",
            "task": task, "test_fraction": EXAMPLE_TEST_FRACTION,
            "split_seed": EXAMPLE_SPLIT_SEED,
            "feature_names": [str(n) for n in getattr(bunch, "feature_names", range(X.shape[1]))],
        })
        if task != "regression":
            handle.attrs["n_classes"] = len(np.unique(y))
