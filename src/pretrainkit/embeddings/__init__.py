"""Embedding slot: ids (and segments, positions) → vectors."""

from pretrainkit.embeddings import speech  # noqa: F401  (registers speech, sinusoidal_fairseq)
from pretrainkit.embeddings.embedding import EMBEDDING_PARTS, Embedding

__all__ = ["EMBEDDING_PARTS", "Embedding"]
