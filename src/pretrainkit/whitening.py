"""BERT-whitening (Su et al. 2021): a linear map that gives sentence vectors zero mean and
identity covariance, optionally keeping only the top ``k`` principal directions.

Fit on vectors ``x`` ``[n, d]``: ``mu`` = the mean, ``C`` = the covariance, ``C = U S U^T`` (SVD)
and ``W = U diag(1/sqrt(S))``; keep the first ``k`` columns of ``W``. Apply: ``(x - mu) @ W``.

A model folder keeps it as ``whitening.safetensors`` (tensors ``mean`` [d] and ``matrix``
[d, k], float64; ``k``, the pooling it was fitted for and the number of sentences in the
metadata), and ``Model.encode`` applies it to the pooled vectors, before normalisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pretrainkit.errors import CheckpointError, ConfigError, DataError

WHITENING = "whitening.safetensors"
FORMAT = "pretrainkit-whitening"
# Directions whose variance is below this fraction of the largest carry rounding noise only:
# dividing by their square root would blow that noise up, so a fit that needs them is refused.
RELATIVE_VARIANCE_FLOOR = 1e-10


@dataclass(frozen=True)
class Whitening:
    """A fitted whitening: ``apply(x) = (x - mean) @ matrix``.

    Attributes:
        mean: ``[d]`` mean of the vectors it was fitted on (float64).
        matrix: ``[d, k]`` ``U diag(1/sqrt(S))``, first ``k`` columns (float64).
        pooling: the pooling of the vectors it was fitted on (``mean``, ``first-last-avg``, ...).
        sentences: how many vectors it was fitted on.
    """

    mean: np.ndarray
    matrix: np.ndarray
    pooling: str
    sentences: int

    @property
    def dimension(self) -> int:
        """Width of the vectors it takes (the model's hidden size)."""
        return int(self.matrix.shape[0])

    @property
    def k(self) -> int:
        """Width of the vectors it gives."""
        return int(self.matrix.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``(vectors - mean) @ matrix``: ``[n, d]`` → ``[n, k]``, in float64."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ConfigError(
                f"whitening: expected vectors [n, {self.dimension}], got {list(vectors.shape)}"
            )
        return (vectors.astype(np.float64) - self.mean) @ self.matrix

    def apply_tensor(self, vectors: torch.Tensor) -> torch.Tensor:
        """``apply`` for a ``[b, d]`` tensor, on its device, in float64 (cast back by the
        caller): float32 would lose digits where ``1/sqrt(S)`` is large."""
        mean = torch.from_numpy(self.mean).to(vectors.device)
        matrix = torch.from_numpy(self.matrix).to(vectors.device)
        return (vectors.double() - mean) @ matrix  # [b, k]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (a safetensors file); the caller makes it atomic (``Model.save``)."""
        path = Path(path)
        tensors = {
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean)),
            "matrix": torch.from_numpy(np.ascontiguousarray(self.matrix)),
        }
        metadata = {
            "format": FORMAT,
            "k": str(self.k),
            "pooling": self.pooling,
            "sentences": str(self.sentences),
        }
        save_file(tensors, str(path), metadata=metadata)
        return path


def fit_whitening(vectors: np.ndarray, k: int | None = None, pooling: str = "mean") -> Whitening:
    """Fit a whitening on sentence vectors ``[n, d]`` and keep its first ``k`` directions.

    Args:
        vectors: pooled, not normalised, sentence vectors; more rows than columns.
        k: directions to keep, ``1 <= k <= d``; None keeps all ``d``.
        pooling: the pooling the vectors were made with, recorded so that ``encode`` never
            applies the whitening to vectors of another kind.

    Raises:
        ConfigError: ``k`` out of range.
        DataError: non-finite vectors, or too few (or too alike) sentences for the
            covariance to have rank ``k``: the fit would divide by zero.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise DataError(f"whitening: expected vectors [sentences, dimension], got {vectors.shape}")
    rows, dimension = vectors.shape
    k = dimension if k is None else k
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ConfigError(f"whitening: k must be an integer, got {k!r}")
    if k < 1:
        raise ConfigError(f"whitening: k = {k} must be at least 1")
    if k > dimension:
        raise ConfigError(f"whitening: k = {k} exceeds the vectors' dimension {dimension}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"whitening: {len(bad)} of {rows} vectors hold NaN or infinity (first: row {bad[0]})"
        )
    if rows <= dimension:
        raise DataError(
            f"whitening: fitted on {rows} sentences for {dimension} dimensions; the covariance "
            f"of n vectors has rank at most n - 1, so it is rank-deficient and cannot be "
            f"inverted: give more than {dimension} sentences"
        )
    mean = vectors.mean(axis=0)  # [d]
    covariance = np.cov(vectors, rowvar=False)  # [d, d], divided by n - 1
    # The covariance is symmetric positive semi-definite, so its SVD is U S U^T with the
    # variances S sorted largest first: the first k columns are the top principal directions.
    u, s, _ = np.linalg.svd(covariance)
    floor = s[0] * RELATIVE_VARIANCE_FLOOR
    if not s[0] > 0 or s[k - 1] <= floor:
        rank = int((s > floor).sum()) if s[0] > 0 else 0
        raise DataError(
            f"whitening: the {rows} sentence vectors span only {rank} of {dimension} "
            f"dimensions (rank-deficient covariance), fewer than k = {k}: give more varied "
            f"sentences or a smaller k"
        )
    matrix = u[:, :k] / np.sqrt(s[:k])  # [d, k]: U diag(1/sqrt(S)), first k columns
    return Whitening(mean, matrix, pooling, rows)


def load_whitening(path: str | os.PathLike, dimension: int | None = None) -> Whitening:
    """Read ``whitening.safetensors``; a CheckpointError naming the file when it is not one
    (missing tensors or metadata, wrong shapes, a ``dimension`` other than the model's)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from None
    if metadata.get("format") != FORMAT or sorted(tensors) != ["matrix", "mean"]:
        raise CheckpointError(
            f"{path}: not a whitening file (expected format {FORMAT!r} with tensors mean and "
            f"matrix; found format {metadata.get('format')!r}, tensors {sorted(tensors)})"
        )
    mean = tensors["mean"].double().numpy()
    matrix = tensors["matrix"].double().numpy()
    try:
        k = int(metadata.get("k", ""))
        sentences = int(metadata.get("sentences", ""))
    except ValueError:
        raise CheckpointError(f"{path}: metadata k / sentences must be integers") from None
    if mean.ndim != 1 or matrix.ndim != 2 or matrix.shape != (mean.shape[0], k):
        raise CheckpointError(
            f"{path}: shapes mean {list(mean.shape)}, matrix {list(matrix.shape)} do not match "
            f"k = {k}"
        )
    if dimension is not None and mean.shape[0] != dimension:
        raise CheckpointError(
            f"{path}: fitted on {mean.shape[0]}-dimensional vectors, the model's are {dimension}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(matrix).all()):
        raise CheckpointError(f"{path}: holds NaN or infinity")
    pooling = metadata.get("pooling")
    if not pooling:
        raise CheckpointError(f"{path}: metadata has no pooling")
    return Whitening(mean, matrix, pooling, sentences)
