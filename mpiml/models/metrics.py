"""Evaluation metrics from sufficient statistics, so that one allreduce evaluates all ranks' rows.

Each ``*_stats`` function returns a float64 vector of SUMS over the rows it is given; the caller
reduces the vectors over ranks (element-wise sum) and ``*_metrics`` turns the totals into
metrics. ROC-AUC uses a fixed histogram of predicted probabilities (``AUC_BINS`` bins), as Spark
MLlib does: exact up to ties inside one bin of width 1/AUC_BINS.
"""

from __future__ import annotations

import numpy as np

AUC_BINS = 2048
_EPS = 1e-15


def regression_stats(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n, sum sq. error, sum abs. error, sum y, sum y^2]."""
    y = np.asarray(y, dtype=np.float64)
    error = predictions - y
    return np.array([y.size, error @ error, np.abs(error).sum(), y.sum(), y @ y])


def regression_metrics(stats: np.ndarray) -> dict[str, float]:
    n, sse, sae, sum_y, sum_y2 = stats
    if n == 0:
        return {}
    total = sum_y2 - sum_y * sum_y / n
    return {"rmse": float(np.sqrt(sse / n)), "mae": float(sae / n),
            "r2": float(1.0 - sse / total) if total > 0 else float("nan")}


def classification_stats(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n, correct, log-loss sum, confusion matrix K x K (row = true), and for K = 2 the
    positive and negative score histograms]. ``proba`` is (n, K); ``y`` holds 0..K-1."""
    n, k = proba.shape
    labels = np.asarray(y).astype(np.intp)
    predicted = np.argmax(proba, axis=1)
    picked = proba[np.arange(n), labels] if n else np.zeros(0)
    log_loss = -np.log(np.clip(picked, _EPS, 1.0)).sum()
    confusion = np.bincount(labels * k + predicted, minlength=k * k).astype(np.float64)
    parts = [np.array([n, float((predicted == labels).sum()), log_loss]), confusion]
    if k == 2:
        bins = np.minimum((proba[:, 1] * AUC_BINS).astype(np.intp), AUC_BINS - 1)
        parts.append(np.bincount(bins[labels == 1], minlength=AUC_BINS).astype(np.float64))
        parts.append(np.bincount(bins[labels == 0], minlength=AUC_BINS).astype(np.float64))
    return np.concatenate(parts)


def classification_stats_size(n_classes: int) -> int:
    return 3 + n_classes * n_classes + (2 * AUC_BINS if n_classes == 2 else 0)


def classification_metrics(stats: np.ndarray, n_classes: int) -> dict[str, float]:
    n, correct, log_loss = stats[:3]
    if n == 0:
        return {}
    k = n_classes
    confusion = stats[3 : 3 + k * k].reshape(k, k)
    out = {"accuracy": float(correct / n), "log_loss": float(log_loss / n)}
    if k == 2:
        tp, fp, fn = confusion[1, 1], confusion[0, 1], confusion[1, 0]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.update(precision=float(precision), recall=float(recall), f1=float(f1))
        positive = stats[3 + 4 : 3 + 4 + AUC_BINS]
        negative = stats[3 + 4 + AUC_BINS :]
        out["roc_auc"] = histogram_auc(positive, negative)
    return out


def histogram_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC-AUC from per-bin counts of positives and negatives (ties within a bin count half)."""
    n_pos, n_neg = positive.sum(), negative.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    negatives_below = np.cumsum(negative) - negative
    wins = positive @ negatives_below + 0.5 * (positive @ negative)
    return float(wins / (n_pos * n_neg))
