"""Tokenizing corpus chunks in several processes, with results kept in corpus order."""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from multiprocessing.pool import AsyncResult
from pathlib import Path

import numpy as np

from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.tokenization.spm import SentencePieceTokenizer

Chunk = list[list[str]]  # documents, each a list of sentences
Encoded = tuple[np.ndarray, np.ndarray, np.ndarray]


def encode_chunk(tokenizer: Tokenizer, dtype: np.dtype, chunk: Chunk) -> Encoded:
    """Tokenize documents into (flat tokens, tokens per sentence, sentences per document).

    Sentences that tokenize to nothing are dropped, and so are documents left empty.
    """
    sentences = [s for document in chunk for s in document]
    encoded = tokenizer.encode_batch(sentences)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    # chain.from_iterable keeps the flattening loop in C: this is the hot path.
    flat = itertools.chain.from_iterable(encoded)
    tokens = np.fromiter(flat, dtype=dtype, count=int(lengths.sum()))
    sizes = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
    document_of = np.repeat(np.arange(len(chunk)), sizes)
    kept_per_doc = np.bincount(document_of[lengths > 0], minlength=len(chunk))
    return tokens, lengths[lengths > 0], kept_per_doc[kept_per_doc > 0].astype(np.int64)


def encode_chunks(
    chunks: Iterable[Chunk],
    tokenizer: Tokenizer,
    tokenizer_path: Path,
    dtype: np.dtype,
    workers: int,
    share_work: bool = True,
) -> Iterator[Encoded]:
    """Encode chunks with `workers` processes (this one included), yielding in input order.

    Helper processes are spawned (never forked, so no tokenizer thread is forked) and take
    `tokenizer_path`. Until the first helper is up, and whenever the helpers have enough queued,
    this process encodes the next chunk itself: a helper's start-up (its imports) then costs
    no wall time. Chunks in flight are bounded, so memory stays flat for any corpus size.
    With `share_work=False` this process only hands out chunks (tests use it to make sure
    the helpers' results are the ones written).
    """
    if workers == 1:
        for chunk in chunks:
            yield encode_chunk(tokenizer, dtype, chunk)
        return
    helpers = workers - 1
    capacity = 2 * helpers
    context = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        with _helpers_ignore_interrupts():  # a Ctrl-C meanwhile is raised once the pool is
            pool = stack.enter_context(  # on the stack, which then ends it
                context.Pool(helpers, _init_worker, (str(tokenizer_path), dtype.name))
            )
        stack.enter_context(_single_threaded(tokenizer))
        started = pool.apply_async(os.getpid)  # ready once some helper runs
        pending: collections.deque[AsyncResult | Encoded] = collections.deque()
        for chunk in chunks:
            remote = sum(isinstance(item, AsyncResult) for item in pending)
            if not share_work or (remote < capacity and started.ready()):
                pending.append(pool.apply_async(_encode_in_worker, (chunk,)))
            else:
                pending.append(encode_chunk(tokenizer, dtype, chunk))
            while pending and (_done(pending[0]) or len(pending) > capacity + 8):
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())


@contextlib.contextmanager
def _helpers_ignore_interrupts() -> Iterator[None]:
    """Start helper processes that ignore Ctrl-C from their first instruction.

    An ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt
    handler: a Ctrl-C while a helper still imports would otherwise print a traceback from it
    before ``_init_worker`` runs. Meanwhile this process has SIGINT blocked, not ignored, so a
    Ctrl-C in that window stays pending (Linux keeps blocked signals even while ignored) and is
    raised here right after, once the pool exists and its ``with`` can end it.
    """
    main = threading.current_thread() is threading.main_thread()
    if not (main and hasattr(signal, "pthread_sigmask")):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _done(item: AsyncResult | Encoded) -> bool:
    return not isinstance(item, AsyncResult) or item.ready()


def _result(item: AsyncResult | Encoded) -> Encoded:
    return item.get() if isinstance(item, AsyncResult) else item


@contextlib.contextmanager
def _single_threaded(tokenizer: Tokenizer) -> Iterator[None]:
    """One tokenizer thread per process while the processes share the cores.

    HF tokenizers' idle threads spin, which more than halves throughput when oversubscribed.
    The environment variable is read on every call, so it is restored afterwards.
    """
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    threads = getattr(tokenizer, "num_threads", None)
    if isinstance(tokenizer, SentencePieceTokenizer):
        tokenizer.num_threads = 1
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
        if isinstance(tokenizer, SentencePieceTokenizer) and threads is not None:
            tokenizer.num_threads = threads


_worker_tokenizer: Tokenizer | None = None
_worker_dtype: np.dtype | None = None


def _init_worker(tokenizer_path: str, dtype_name: str) -> None:
    global _worker_tokenizer, _worker_dtype
    # Ctrl-C reaches the whole process group: the main process handles it (cleans up, ends the
    # pool, prints one line); helpers printing their own KeyboardInterrupt would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # see _single_threaded
    _worker_tokenizer = load_tokenizer(tokenizer_path)
    if isinstance(_worker_tokenizer, SentencePieceTokenizer):
        _worker_tokenizer.num_threads = 1
    _worker_dtype = np.dtype(dtype_name)


def _encode_in_worker(chunk: Chunk) -> Encoded:
    assert _worker_tokenizer is not None and _worker_dtype is not None
    return encode_chunk(_worker_tokenizer, _worker_dtype, chunk)
