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


def pearson(predictions: np.ndarray, gold: np.ndarray) -> float:
    a = np.asarray(predictions, dtype=np.float64)
    b = np.asarray(gold, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank (what Spearman's correlation needs)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    positions = np.empty(len(x), dtype=np.float64)
    positions[order] = np.arange(len(x), dtype=np.float64)
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, weights=positions) / np.bincount(inverse))[inverse]


def spearman(predictions: np.ndarray, gold: np.ndarray) -> float:
    return pearson(ranks(predictions), ranks(gold))


def regression_metrics(predictions: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    predictions = np.asarray(predictions, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    return {
        "spearman": spearman(predictions, gold),
        "pearson": pearson(predictions, gold),
        "mse": float(np.mean((predictions - gold) ** 2)) if len(gold) else 0.0,
    }


def bernoulli_kl(reference, outputs) -> float:
    """How far sigmoid outputs moved (SAMP's divergence for multi-label heads): the mean over
    rows and columns of KL(Bernoulli(sigmoid(reference)) || Bernoulli(sigmoid(outputs)))."""
    import torch
    import torch.nn.functional as F

    r = torch.from_numpy(np.stack(reference).astype(np.float64))
    o = torch.from_numpy(np.stack(outputs).astype(np.float64))
    p = r.sigmoid()
    kl = p * (F.logsigmoid(r) - F.logsigmoid(o)) + (1 - p) * (F.logsigmoid(-r) - F.logsigmoid(-o))
    return float(kl.mean())
