"""Binary classification metrics with numpy alone (no scikit-learn needed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Binary", "binary", "decisions", "average_precision", "pr_curve", "best_f1_threshold"]


@dataclass(frozen=True)
class Binary:
    n: int
    positives: int
    precision: float
    recall: float
    f1: float
    fpr: float
    auprc: float

    def as_dict(self) -> dict:
        return asdict(self)


def pr_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and threshold at every distinct score, highest threshold first."""
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order].astype(bool), score[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.nonzero(np.diff(score))[0], len(score) - 1]  # last index of each distinct score
    tp, fp, thr = tp[last], fp[last], score[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(y.sum()), 1)
    return precision, recall, thr


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's definition)."""
    if not np.any(y):
        return float("nan")
    precision, recall, _ = pr_curve(y, score)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary(y: np.ndarray, score: np.ndarray, threshold: float) -> Binary:
    """Metrics of the decision ``score >= threshold`` against boolean labels ``y``."""
    return decisions(y, np.asarray(score) >= threshold, score)


def decisions(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> Binary:
    """Metrics of boolean decisions ``pred`` against labels ``y``; AUPRC is ranked by ``score``.

    Apart from :func:`binary` because a policy's decision is not always one
    threshold on one score (a category's action may be ``allow``).
    """
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return Binary(len(y), int(y.sum()), precision, recall, f1, fpr, average_precision(y, np.asarray(score)))


def best_f1_threshold(y: np.ndarray, score: np.ndarray, max_fpr: float = 1.0) -> float:
    """The threshold with the highest F1 among those whose false-positive rate is at most ``max_fpr``."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="mergesort")
    ys, ss = y[order], score[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    tp, fp, thr = np.cumsum(ys)[last], np.cumsum(~ys)[last], ss[last]
    positives, negatives = int(y.sum()), max(int((~y).sum()), 1)
    f1 = 2 * tp / np.maximum(tp + fp + positives, 1)  # 2tp / (2tp + fp + fn)
    f1[fp / negatives > max_fpr] = -1.0
    return float(thr[int(np.argmax(f1))])
