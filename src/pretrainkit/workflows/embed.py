"""The ``embed`` command: sentence embeddings of a text file (``Model.encode``, in
``pretrainkit.encoding``) as a ``.npy`` array.

Pooling choices:

- ``cls``: the first token's last-layer vector.
- ``mean`` / ``max``: over the real (non-padding) tokens of the last layer.
- ``first-last-avg``: mean over real tokens of the average of the *first transformer layer's*
  output and the last layer's output (BERT-whitening, Su et al. 2021; SimCSE's corrected
  definition, not the embedding-layer output that some early code used).

Whitening (``--whiten K``, ``pretrainkit.whitening``): fitted on the pooled vectors of
``--whiten-fit`` (default: the input itself), it maps them to zero mean and identity covariance
in their top ``K`` directions, before normalisation; the output is then ``[rows, K]``. A model
folder that holds one (``--whiten-out`` writes such a folder) applies it every time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pretrainkit.encoding import POOLINGS, capacity, encode, finish_vectors, resolve_options
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.fileio import atomic_file, check_output, read_utf8
from pretrainkit.whitening import fit_whitening

__all__ = ["POOLINGS", "capacity", "embed", "encode", "read_texts"]

log = logging.getLogger(__name__)


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
    precision: str = "fp32",
    whiten: int | None = None,
    whiten_fit: str | Path | None = None,
    whiten_out: str | Path | None = None,
) -> dict:
    """Embed every text of ``data_file`` and write a ``[rows, hidden]`` float32 ``.npy``.

    The output appears whole or not at all (written beside, then renamed); an existing
    ``out_file`` is replaced only with ``overwrite``. A model folder with a whitening
    (``whitening.safetensors``) gives whitened ``[rows, k]`` vectors.

    Args:
        whiten: fit a whitening keeping ``whiten`` directions on the pooled vectors of
            ``whiten_fit`` (default: ``data_file`` itself), replacing the folder's own, and write
            ``[rows, whiten]``; it needs more fit sentences than the model has dimensions.
        whiten_fit: the texts to fit the whitening on (same format as ``data_file``).
        whiten_out: a new model folder: the model with the fitted whitening, for later
            ``encode`` / ``embed`` calls; never the input folder.
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (GPU only).
    """
    from pretrainkit.folders import load
    from pretrainkit.model import model_folder

    if whiten is None and (whiten_fit is not None or whiten_out is not None):
        given = "--whiten-fit" if whiten_fit is not None else "--whiten-out"
        raise ConfigError(f"{given} needs --whiten K (the number of directions to keep)")
    if whiten is not None and whiten < 1:
        raise ConfigError(f"--whiten: {whiten} must be at least 1")
    # Refuse the outputs before the work, not after it.
    check_output(out_file, overwrite, folder=False)
    folder = model_folder(model_dir)
    if whiten_out is not None:
        if Path(whiten_out).resolve() == folder.resolve():
            raise ConfigError(
                f"--whiten-out {whiten_out}: is the input model folder; give a new folder"
            )
        check_output(whiten_out, overwrite, folder=True)
    model = load(folder)
    texts = read_texts(data_file)
    result: dict = {"out": str(out_file), "rows": len(texts)}
    vectors = None
    if whiten is not None:
        pooling, normalized, _ = resolve_options(model, pooling, normalize, max_length, False)
        fit_texts = texts if whiten_fit is None else read_texts(whiten_fit)
        raw = encode(model, fit_texts, batch_size, pooling, False, max_length, precision, False)
        if model.whitening is not None:
            log.info("%s: its whitening is replaced by the one fitted here", folder)
        try:
            model.whitening = fit_whitening(raw, whiten, pooling)
        except DataError as error:  # name the file the vectors came from
            raise DataError(str(error), whiten_fit or data_file) from None
        result.update(whiten=whiten, pooling=pooling, whiten_fit_rows=len(fit_texts))
        if whiten_out is not None:
            model.save(whiten_out, overwrite=overwrite)
            result["whiten_out"] = str(whiten_out)
        if whiten_fit is None:  # fitted on the texts themselves: whiten those vectors
            vectors = finish_vectors(torch.from_numpy(raw), model.whitening, normalized).numpy()
    if vectors is None:
        vectors = encode(
            model, texts, batch_size, pooling, normalize, max_length, precision=precision
        )
    with atomic_file(out_file, overwrite) as tmp, tmp.open("wb") as f:
        np.save(f, vectors)  # to a file object: np.save would otherwise append ".npy"
    result["dim"] = int(vectors.shape[1])
    return result
