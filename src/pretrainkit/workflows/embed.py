"""The ``embed`` command: sentence embeddings of a text file (``Model.encode``, in
``pretrainkit.encoding``) as a ``.npy`` array.

Pooling choices:

- ``cls``: the first token's last-layer vector.
- ``mean`` / ``max``: over the real (non-padding) tokens of the last layer.
- ``first-last-avg``: mean over real tokens of the average of the *first transformer layer's*
  output and the last layer's output (BERT-whitening, Su et al. 2021; SimCSE's corrected
  definition, not the embedding-layer output that some early code used).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pretrainkit.errors import DataError
from pretrainkit.fileio import atomic_file, check_output, read_utf8

if TYPE_CHECKING:
    pass

from pretrainkit.encoding import POOLINGS, capacity, encode

__all__ = ["POOLINGS", "capacity", "embed", "encode", "read_texts"]


def read_texts(path: str | Path) -> list[str]:
    """Texts to embed: one per line, or the ``text_a`` column of a ``.tsv`` task file.

    A ``.tsv`` file is a task file as ``finetune`` and ``predict`` read it (header with
    ``text_a`` and optionally ``label`` / ``text_b``).

    Every line is kept (an empty line is an empty text), so row i of the output is line i of
    the input (line i + 1 for a TSV, after its header).
    """
    path = Path(path)
    if path.suffix == ".tsv":
        from pretrainkit.tasks.tsv import read_classification_tsv

        return read_classification_tsv(path, require_labels=False).texts_a
    text = read_utf8(path)
    lines = text.split("\n")  # not splitlines(): U+2028 and friends are part of a text
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("file is empty; expected one text per line", path)
    return [line.rstrip("\r") for line in lines]


def embed(
    model_dir: str | Path,
    data_file: str | Path,
    out_file: str | Path,
    pooling: str | None = None,
    normalize: bool | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Embed every text of ``data_file`` and write a ``[rows, hidden]`` float32 ``.npy``.

    The output appears whole or not at all (written beside, then renamed); an existing
    ``out_file`` is replaced only with ``overwrite``.
    """
    from pretrainkit.folders import load

    check_output(out_file, overwrite, folder=False)  # before the work, not after it
    model = load(model_dir)
    texts = read_texts(data_file)
    vectors = encode(model, texts, batch_size, pooling, normalize, max_length)
    with atomic_file(out_file, overwrite) as tmp, tmp.open("wb") as f:
        np.save(f, vectors)  # to a file object: np.save would otherwise append ".npy"
    return {"out": str(out_file), "rows": len(texts), "dim": int(vectors.shape[1])}
