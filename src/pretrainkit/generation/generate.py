"""Greedy, sampling and beam-search decoding over a KV cache.

Decoder-only models: prompts of different lengths are left-padded into one batch; every row gets
its own positions (0 at its first real token) and padding slots are masked out of attention, so
a batched prompt generates what it would alone (up to float rounding).

Encoder-decoder models: the prompts are right-padded and encoded once; the decoder starts from
its start id and caches both its own keys/values and the cross-attention keys/values of the
encoder's output. Speech encoder-decoders take ``input_features`` (log-mel frames, right-padded,
with their frame mask) instead of prompts; the encoder reads them under the mask of its
subsampled frames (``Model.encoder_mask``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pretrainkit.encoders.transformer import KVCache
from pretrainkit.errors import ConfigError

STRATEGIES = ("greedy", "beam", "sample")


def _is_seq2seq(model: nn.Module) -> bool:
    return getattr(model, "decoder", None) is not None


def check_generative(model: nn.Module) -> None:
    """Raise ConfigError unless ``model`` can generate: a causal encoder with an ``lm`` target,
    or an encoder-decoder with a ``seq2seq_lm`` target."""
    targets = getattr(model, "targets", {})
    seq2seq = _is_seq2seq(model)
    head = "seq2seq_lm" if seq2seq else "lm"
    if head not in targets:
        raise ConfigError(
            f"generation needs a {head!r} target; this model has {sorted(targets) or 'none'}"
        )
    stack = getattr(model, "decoder" if seq2seq else "encoder", None)
    if not getattr(stack, "causal", False):
        raise ConfigError("generation needs a causal encoder (encoder.causal: true) or a decoder")
    if not hasattr(stack, "forward_cached"):
        raise ConfigError(f"{type(stack).__name__} does not support cached generation")


def _max_positions(embedding: Any, config: Any) -> tuple[int, bool]:
    """The configured position capacity and whether it is a hard limit (a position table)."""
    limit = int(config.max_positions) if config is not None else 1 << 30
    parts = getattr(embedding, "parts", {})
    tables = ("position", "sinusoidal", "sinusoidal_halves", "sinusoidal_fairseq")
    return limit, any(name in parts for name in tables)


class _Runner:
    """Next-token logits for a batch of rows, cached or recomputed.

    Decoder-only: the rows are the left-padded prompts, extended by each step. Encoder-decoder:
    the prompts are encoded once (``memory``); the rows are the decoder's inputs, starting from
    its start id.
    """

    def __init__(self, model: nn.Module, use_cache: bool):
        # Any: the slots are typed nn.Module, their generation methods are duck-typed.
        self.model: Any = model
        self.use_cache = use_cache
        self.cache = KVCache()
        self.seq2seq = _is_seq2seq(model)
        targets: Any = model.targets
        self.lm: Any = targets["seq2seq_lm" if self.seq2seq else "lm"]
        self.embedding: Any = model.tgt_embedding if self.seq2seq else model.embedding
        self.stack: Any = model.decoder if self.seq2seq else model.encoder
        self.memory: torch.Tensor | None = None
        self.memory_keep: torch.Tensor | None = None

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm(hidden[:, -1:], None, None).logits[:, -1].float()  # [b, v]

    def start(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits after the prompts ``ids`` ``[b, s]`` (``keep`` False on padding); for a
        speech encoder-decoder, features ``[b, frames, num_mel_bins]`` and their frame mask."""
        if self.seq2seq:
            # Encoded once, under the mask of what the embedding made of the input (speech
            # frames are subsampled); the decoder's rows begin with its start id.
            self.memory = self.model.encoder_states(ids, keep.long())
            self.memory_keep = self.model.encoder_mask(keep.long()).bool()
            start = self.model.config.decoder.start_id
            ids = torch.full((len(ids), 1), start, dtype=torch.long, device=ids.device)
            keep = torch.ones_like(ids, dtype=torch.bool)
        self.ids, self.keep = ids, keep
        if not self.use_cache:
            return self._recompute()
        positions = (keep.long().cumsum(1) - 1).clamp(min=0)
        x = self.embedding(ids, positions=positions)
        return self._logits(self._cached(x, positions, keep))

    def _cached(
        self, x: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor | None
    ) -> torch.Tensor:
        if self.seq2seq:
            return self.stack.forward_cached(
                x, self.cache, positions, keep, self.memory, self.memory_keep
            )
        return self.stack.forward_cached(x, self.cache, positions, keep)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[b]`` to every row and return the next logits."""
        new = tokens[:, None]
        self.ids = torch.cat((self.ids, new), dim=1)
        self.keep = torch.cat((self.keep, torch.ones_like(new, dtype=torch.bool)), dim=1)
        if not self.use_cache:
            return self._recompute()
        positions = self.keep.long().sum(1, keepdim=True) - 1  # [b, 1]
        x = self.embedding(new, positions=positions)
        return self._logits(self._cached(x, positions, None))

    def reorder(self, index: torch.Tensor) -> None:
        self.ids, self.keep = self.ids[index], self.keep[index]
        if self.memory is not None and self.memory_keep is not None:
            self.memory, self.memory_keep = self.memory[index], self.memory_keep[index]
        if self.use_cache:
            self.cache.reorder(index)

    def _recompute(self) -> torch.Tensor:
        if self.seq2seq:
            assert self.memory is not None
            hidden = self.stack(
                self.embedding(self.ids), self.keep.long(), self.memory, self.memory_keep
            )
            return self._logits(hidden)
        if bool(self.keep.all()):
            # Without padding the reference is the model's own training forward (its slots; the
            # head runs on the last position only, as in the cached path).
            return self._logits(self.model.encoder_states(self.ids))
        # Left padding needs per-row positions, which only the cached path takes: run it on
        # the whole sequence with a fresh cache every step (same cost as no cache).
        positions = (self.keep.long().cumsum(1) - 1).clamp(min=0)
        x = self.model.embedding(self.ids, positions=positions)
        hidden = self.model.encoder.forward_cached(x, KVCache(), positions, self.keep)
        return self._logits(hidden)


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) sets to -inf; at least one survives."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the ones ranked above it already reach top_p (the first never is).
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _pad_prompts(
    input_ids: torch.Tensor | Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    left: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 2:
            raise ConfigError(f"input_ids must be [batch, length], got {tuple(input_ids.shape)}")
        rows = [[int(t) for t in row] for row in input_ids.tolist()]
    else:
        rows = [[int(t) for t in row] for row in input_ids]
    if not rows or any(len(row) == 0 for row in rows):
        raise ConfigError("every prompt needs at least one token")
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    keep = torch.zeros(len(rows), width, dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        start = width - len(row) if left else 0
        ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        keep[i, start : start + len(row)] = True
    return ids, keep


def _features(
    model: Any, features: torch.Tensor, attention_mask: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Speech input ``[b, frames, num_mel_bins]`` and its frame mask (right padding) as
    (input, keep, the longest input in encoder positions: subsampled frames)."""
    if not _is_seq2seq(model):
        raise ConfigError("input_features need an encoder-decoder (speech-to-text) model")
    if features.dim() != 3:
        raise ConfigError(
            f"input_features must be [batch, frames, num_mel_bins], got {tuple(features.shape)}"
        )
    if attention_mask is None:
        attention_mask = torch.ones(features.shape[:2], dtype=torch.long)
    if tuple(attention_mask.shape) != tuple(features.shape[:2]):
        raise ConfigError(
            f"attention_mask {tuple(attention_mask.shape)} must be [batch, frames] of "
            f"input_features {tuple(features.shape)}"
        )
    keep = attention_mask.to(device).bool()
    if not bool(keep.any(1).all()):
        raise ConfigError("every input needs at least one frame")
    longest = int(model.encoder_mask(keep.long()).sum(1).max())
    return features.to(device), keep, longest


def _check_options(
    strategy: str, max_new_tokens: int, num_beams: int, top_k: int, top_p: float, temp: float
) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_beams < 1:
        raise ConfigError(f"num_beams must be >= 1, got {num_beams}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
    if temp <= 0.0:
        raise ConfigError(f"temperature must be > 0, got {temp}")


def generate(
    model: nn.Module,
    input_ids: torch.Tensor | Sequence[Sequence[int]] | None,
    max_new_tokens: int,
    strategy: str = "greedy",
    num_beams: int = 4,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    seed: int | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    length_penalty: float = 1.0,
    pad_id: int = 0,
    input_features: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> list[list[int]]:
    """Continue each prompt with up to ``max_new_tokens`` tokens.

    Runs in eval mode without gradients (the model's mode is restored). Prompts of different
    lengths are left-padded into one batch with per-row positions and a padding mask
    (decoder-only), or right-padded and encoded once (encoder-decoder).

    Args:
        model: a decoder-only model (causal transformer encoder and an ``lm`` target) or an
            encoder-decoder (a decoder and a ``seq2seq_lm`` target).
        input_ids: prompts, a ``[b, s]`` tensor or lists of ids of any lengths; for an
            encoder-decoder, the encoder's input (the decoder starts from its start id).
            None when ``input_features`` are given.
        max_new_tokens: most tokens generated per prompt.
        strategy: ``greedy`` (argmax), ``sample`` (top-k / top-p / temperature) or ``beam``.
        num_beams: beams per prompt for ``beam``.
        top_k: sample only among the k most likely tokens (0 = off).
        top_p: sample only from the smallest set of tokens whose probability reaches top_p.
        temperature: logits are divided by it before sampling (> 0).
        seed: seeds the sampling ``torch.Generator``; None draws from torch's global RNG.
        eos_id: a row stops after producing it; None = always ``max_new_tokens``.
        use_cache: keep keys/values of earlier tokens (else recompute the whole sequence).
        length_penalty: beam hypotheses are ranked by ``sum(log p) / length ** length_penalty``
            where length counts the generated tokens (eos included), as HF does by default
            (1.0 = mean log-prob; 0.0 = plain sum).
        pad_id: id placed in padding slots (never attended).
        input_features: a speech encoder-decoder's input instead of ``input_ids``: log-mel
            features ``[b, frames, num_mel_bins]``, right-padded.
        attention_mask: the frame mask ``[b, frames]`` of ``input_features`` (None = no
            padding); the encoder gets the mask of its subsampled frames.

    Returns:
        The new tokens only (no prompt, no decoder start id) per prompt, ending with ``eos_id``
        when it was produced; for ``beam``, the best hypothesis.

    Raises:
        ConfigError: not a decoder-only model, bad option values, or a prompt (plus the new
            tokens, for a learned or sinusoidal position table) longer than ``max_positions``.
    """
    check_generative(model)
    _check_options(strategy, max_new_tokens, num_beams, top_k, top_p, temperature)
    device = next(model.parameters()).device
    seq2seq = _is_seq2seq(model)
    if (input_ids is None) == (input_features is None):
        raise ConfigError("give exactly one of input_ids and input_features")
    token_part = getattr(getattr(model, "embedding", None), "token_part", "word")
    if input_ids is not None:
        if token_part != "word":
            raise ConfigError(
                f"this model reads {token_part} input, not token ids"
                + ("; give input_features (log-mel frames)" if token_part == "speech" else "")
            )
        if attention_mask is not None:
            raise ConfigError("attention_mask goes with input_features; prompts are padded here")
        ids, keep = _pad_prompts(input_ids, pad_id, device, left=not seq2seq)
        longest = int(keep.sum(1).max())
    else:
        assert input_features is not None
        ids, keep, longest = _features(model, input_features, attention_mask, device)
    config: Any = getattr(model, "config", None)
    embedding: Any = getattr(model, "embedding", None)
    limit, hard = _max_positions(embedding, getattr(config, "embedding", None))
    if longest > limit:
        raise ConfigError(f"prompt of {longest} tokens is longer than max_positions {limit}")
    if seq2seq:  # the new tokens go to the decoder, after its start id
        target: Any = getattr(model, "tgt_embedding", None)
        limit, hard = _max_positions(target, getattr(config, "tgt_embedding", None))
        longest = 1
    if hard and longest + max_new_tokens > limit:
        raise ConfigError(
            f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the "
            f"position table (max_positions {limit})"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            runner = _Runner(model, use_cache)
            if strategy == "beam":
                return _beam(runner, ids, keep, max_new_tokens, num_beams, eos_id, length_penalty)
            generator = None
            if strategy == "sample" and seed is not None:
                generator = torch.Generator(device=device).manual_seed(seed)
            return _decode(
                runner, ids, keep, max_new_tokens, strategy, top_k, top_p, temperature,
                generator, eos_id,
            )  # fmt: skip
    finally:
        model.train(was_training)


def _decode(
    runner: _Runner,
    ids: torch.Tensor,
    keep: torch.Tensor,
    max_new_tokens: int,
    strategy: str,
    top_k: int,
    top_p: float,
    temperature: float,
    generator: torch.Generator | None,
    eos_id: int | None,
) -> list[list[int]]:
    batch = ids.shape[0]
    out: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    logits = runner.start(ids, keep)
    for step in range(max_new_tokens):
        if strategy == "greedy":
            tokens = logits.argmax(-1)
        else:
            probs = _filter(logits / temperature, top_k, top_p).softmax(-1)
            tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
        for i in (~done).nonzero()[:, 0].tolist():
            out[i].append(int(tokens[i]))
        if eos_id is not None:
            done |= tokens == eos_id
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        # Finished rows keep running (cheaper than shrinking the batch); their tokens are unused.
        logits = runner.step(tokens)
    return out


def _beam(
    runner: _Runner,
    ids: torch.Tensor,
    keep: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    eos_id: int | None,
    length_penalty: float,
) -> list[list[int]]:
    """Beam search: ``num_beams`` rows per prompt, 2k candidates per step so k can continue.

    A hypothesis ending in eos is set aside with its normalised score; a prompt is done once it
    has ``num_beams`` of them and its best running beam, normalised at the current length,
    cannot beat the worst (HF's default, non-early stopping heuristic).
    """
    batch, k = ids.shape[0], num_beams
    device = ids.device
    rows = torch.arange(batch, device=device).repeat_interleave(k)
    logp = runner.start(ids[rows], keep[rows]).log_softmax(-1)  # [b*k, v]
    vocab = logp.shape[-1]
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # identical beams at the start: only the first may expand
    tokens_so_far = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def norm(total: float, length: int) -> float:
        return total / (length**length_penalty)

    for step in range(max_new_tokens):
        length = step + 1
        candidates = (scores[:, :, None] + logp.view(batch, k, vocab)).view(batch, k * vocab)
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=-1)
        next_beam = torch.zeros(batch, k, dtype=torch.long, device=device)
        next_token = torch.zeros(batch, k, dtype=torch.long, device=device)
        next_score = torch.full((batch, k), float("-inf"), device=device)
        for b in range(batch):
            if done[b]:
                continue
            filled = 0
            for score, index in zip(top_scores[b].tolist(), top_index[b].tolist(), strict=True):
                beam, token = divmod(index, vocab)
                if score == float("-inf"):
                    break
                if eos_id is not None and token == eos_id:
                    seq = tokens_so_far[b * k + beam].tolist() + [token]
                    finished[b].append((norm(score, length), seq))
                    continue
                next_beam[b, filled], next_token[b, filled] = beam, token
                next_score[b, filled] = score
                filled += 1
                if filled == k:
                    break
            finished[b] = sorted(finished[b], key=lambda item: -item[0])[:k]
            best_running = float(next_score[b, 0])
            if len(finished[b]) == k and norm(best_running, length) <= finished[b][-1][0]:
                done[b] = True
        if all(done):
            break
        index = (torch.arange(batch, device=device)[:, None] * k + next_beam).view(-1)
        tokens_so_far = torch.cat((tokens_so_far[index], next_token.view(-1, 1)), dim=1)
        scores = next_score
        if step == max_new_tokens - 1:
            break
        runner.reorder(index)
        logp = runner.step(next_token.view(-1)).log_softmax(-1)
    results = []
    for b in range(batch):
        pool = list(finished[b])
        if not done[b]:
            # Beams still running at the limit compete with the finished ones.
            length = tokens_so_far.shape[1]
            for j in range(k):
                if scores[b, j] > float("-inf"):
                    pool.append(
                        (norm(float(scores[b, j]), length), tokens_so_far[b * k + j].tolist())
                    )
        results.append(max(pool, key=lambda item: item[0])[1])
    return results
