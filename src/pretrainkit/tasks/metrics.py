"""Task metrics computed from predictions and gold labels."""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, gold: np.ndarray) -> float:
    return float((predictions == gold).mean()) if len(gold) else 0.0


def macro_f1(predictions: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    scores = []
    for c in range(num_labels):
        tp = int(((predictions == c) & (gold == c)).sum())
        fp = int(((predictions == c) & (gold != c)).sum())
        fn = int(((predictions != c) & (gold == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(
    predictions: np.ndarray, gold: np.ndarray, num_labels: int
) -> dict[str, float]:
    return {
        "accuracy": accuracy(predictions, gold),
        "macro_f1": macro_f1(predictions, gold, num_labels),
    }
