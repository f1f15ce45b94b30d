"""Per-row sample weights and class weights, checked and combined the same way wherever they come
from: a data set of the training file with ``model.class_weight`` (the CLI), or a caller's
``sample_weight`` and ``class_weight`` (the estimators).

A row's weight is its sample weight times its class's weight, as in scikit-learn. The global
totals (per class, and over all rows) are sums of the weights rounded onto one agreed grid
(:meth:`mpiml.comm.Reducer.quantize_rows`), so they have the same bits on any number of ranks,
and so do the "balanced" class weights made from them.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..comm import mark_raised_together
from .shard import DataError


def _shown(label) -> str:
    """A class label as the user wrote it (numpy scalars as plain numbers or text)."""
    return repr(label.item() if isinstance(label, np.generic) else label)


def check_weights(weights: np.ndarray, first_row: int, where: str, rows: str = "global row"
                  ) -> None:
    """A DataError naming the first weight of ``weights`` (``rows`` ``first_row`` on) that is
    negative or not finite."""
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise DataError(f"{where} holds {weights[bad[0]]} at {rows} {first_row + int(bad[0])} "
                        "(sample weights must be finite and >= 0)")


def weight_total(weights: np.ndarray, n_total: int, reducer) -> float:
    """The sum of every rank's ``weights``, the same bits on any number of ranks; collective."""
    quantized, scale = reducer.quantize_rows(weights[None, :], n_total)
    return float(reducer.sum(quantized.sum(axis=1))[0] / scale[0])


def class_totals(labels: np.ndarray, weights: np.ndarray | None, n_classes: int, n_total: int,
                 reducer) -> np.ndarray:
    """The weight of every class over all ranks (its row count without ``weights``), the same
    bits on any number of ranks; collective."""
    if weights is None:
        return reducer.sum(np.bincount(labels, minlength=n_classes).astype(np.float64))
    quantized, scale = reducer.quantize_rows(weights[None, :], n_total)
    totals = np.bincount(labels, weights=quantized[0], minlength=n_classes)
    return reducer.sum(totals) / scale[0]


def class_factors(class_weight, classes: np.ndarray, totals: np.ndarray, name: str
                  ) -> np.ndarray:
    """The weight of every class: 1 (None), scikit-learn's "balanced" ``sum(totals) / (K *
    totals_k)`` from the global class weights ``totals``, or a mapping label -> weight
    (classes it leaves out weigh 1). ``name`` (the parameter or config key) is named in the
    error, raised the same on every rank."""
    factors = np.ones(len(classes))
    if class_weight is None:
        return factors
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise mark_raised_together(DataError(
                f"{name} must be 'balanced', a mapping label -> weight or None; got "
                f"{class_weight!r}"))
        empty = np.flatnonzero(totals == 0)
        if empty.size:
            raise mark_raised_together(DataError(
                f"{name} 'balanced': class {_shown(classes[empty[0]])} has no weight (no rows, or "
                "only rows of weight 0)"))
        return totals.sum() / (len(classes) * totals)
    if not hasattr(class_weight, "items"):
        raise mark_raised_together(DataError(
            f"{name} must be 'balanced', a mapping label -> weight or None; got "
            f"{class_weight!r}"))
    for label, value in class_weight.items():
        at = [k for k, known in enumerate(classes) if known == label]
        if not at:
            shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10
                                                                else "")
            raise mark_raised_together(DataError(
                f"{name} gives a weight to label {label!r}, which is not a class of the data "
                f"({shown})"))
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value) or value < 0):
            raise mark_raised_together(DataError(
                f"{name}: the weight of class {label!r} must be a finite number >= 0; got "
                f"{value!r}"))
        factors[at[0]] = float(value)
    return factors


def row_weights(labels: np.ndarray | None, weights: np.ndarray | None,
                classes: np.ndarray | None, class_weight, n_total: int, reducer,
                names: tuple[str, str]) -> tuple[np.ndarray | None, float]:
    """Every row's final weight (None: all 1) and the global weight total; collective.

    ``labels`` are class indices into ``classes`` (None for regression and clustering),
    ``weights`` this rank's checked sample weights (None: all 1). ``names`` are what the errors
    call the sample weights and the class weights (a data set and a config key, or the
    estimator's parameters). Raises the same DataError on every rank when every weight is 0,
    or when fewer than two classes keep a positive weight.
    """
    if weights is None and class_weight is None:
        return None, float(n_total)
    if classes is None:
        total = weight_total(weights, n_total, reducer)
    else:
        totals = class_totals(labels, weights, len(classes), n_total, reducer)
        factors = class_factors(class_weight, classes, totals, names[1])
        if class_weight is not None:
            base = np.ones(len(labels)) if weights is None else weights
            weights = base * factors[labels]
        totals *= factors
        total = float(totals.sum())
        if 0 < total and np.count_nonzero(totals) < 2:
            raise mark_raised_together(DataError(
                f"{names[0]}: only class {_shown(classes[np.flatnonzero(totals)[0]])} has a "
                "positive weight; a classifier needs samples of at least 2 classes with "
                "positive weight"))
    if not total > 0:
        raise mark_raised_together(DataError(
            f"{names[0]}: every sample weight is zero; at least one row needs a positive "
            "weight"))
    return weights, total
