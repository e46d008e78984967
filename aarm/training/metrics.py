"""Classification metrics over score matrices."""

import numpy as np


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Bool (N,): the label is among the k highest scores. scores (N, classes), labels (N,)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def classification_summary(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, object]:
    """top-1, top-5, mean per-class accuracy, per-class accuracy and the confusion matrix."""
    labels = np.asarray(labels, dtype=np.int64)
    matrix = confusion_matrix(scores.argmax(axis=1), labels, len(classes))
    support = matrix.sum(axis=1)
    per_class = np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)
    return {
        "samples": int(len(labels)),
        "top1": float(topk_correct(scores, labels, 1).mean()),
        "top5": float(topk_correct(scores, labels, 5).mean()),
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "per_class": {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class, strict=True)},
        "confusion": matrix.tolist(),
    }
