"""Decoding images in several processes (``preprocess --workers`` for image objectives), with
results kept in input order; the counterpart of ``workers.py`` for text."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import signal
from collections.abc import Generator, Iterable
from pathlib import Path

import numpy as np
import torch

from pretrainkit.data.images import resized_image
from pretrainkit.data.workers import _helpers_ignore_interrupts
from pretrainkit.errors import DataError

# One chunk of images to decode: (which corpus file, [(image file, its TSV line), ...]).
ImageChunk = tuple[int, list[tuple[str, int]]]
# A decoded chunk: (which corpus file, pixel bytes [images, c·s·s] uint8 of the good ones,
# [(TSV line, what is wrong), ...] of those that cannot be decoded).
DecodedChunk = tuple[int, np.ndarray, list[tuple[int, str]]]


def decode_image_chunks(
    chunks: Iterable[ImageChunk],
    tsv_files: list[Path],
    image_size: int,
    channels: int,
    workers: int,
) -> Generator[DecodedChunk, None, None]:
    """Resize every image of ``chunks`` to ``[channels, image_size, image_size]`` pixel bytes,
    in input order, decoded by ``workers`` processes (helpers, spawned, when more than one; the
    output does not depend on it). An image that cannot be decoded is reported with its TSV
    line, for the caller to raise or skip: exceptions do not cross processes intact."""
    job = functools.partial(_decode_chunk, [str(p) for p in tsv_files], image_size, channels)
    if workers == 1:
        yield from map(job, chunks)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that holds torch
    with contextlib.ExitStack() as stack:
        with _helpers_ignore_interrupts():  # see there: a Ctrl-C is raised here, once
            pool = stack.enter_context(context.Pool(workers, _init_decoder))
        yield from pool.imap(job, chunks)  # in order; the `with` ends the pool on any exit


def _init_decoder() -> None:
    # Ctrl-C is handled by the main process; one torch thread each, the helpers share cores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _decode_chunk(
    tsv_files: list[str], image_size: int, channels: int, chunk: ImageChunk
) -> DecodedChunk:
    index, rows = chunk
    tsv = Path(tsv_files[index])
    pixels, failures = [], []
    for image, line in rows:
        try:
            values = resized_image(Path(image), image_size, channels, (tsv, line))
        except DataError as error:
            failures.append((line, str(error).removeprefix(f"{tsv}:{line}: ")))
            continue
        pixels.append((values.numpy() * 255).round().astype(np.uint8).reshape(-1))
    size = channels * image_size * image_size
    stacked = np.stack(pixels) if pixels else np.zeros((0, size), dtype=np.uint8)
    return index, stacked, failures
