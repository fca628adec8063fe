"""``masked_patch``: masked image modelling on pixels (SimMIM / MAE-style regression target).

The corpus is an image TSV (header with an ``image`` column; a ``label`` column may be there and
is not used). ``preprocess`` stores every image, resized to ``image_size``, as one document of
``channels x image_size²`` byte values in the ordinary token shards (the ids are pixel values
0-255), so shards, resumable streams and ``pretrain`` work unchanged.

``preprocess`` still takes ``--tokenizer`` here, and tokenizes nothing with it: the shard format
holds one (``Shards.open`` loads it; ``pretrain`` sets the model's ``vocab_size`` from it, pads
batches with its pad id and saves it in the run's model folder). Any tokenizer will do; shards
without one would need ``Shards`` and ``pretrain`` to accept none.

An instance is one image: ``pixel_values`` (normalised to [-1, 1]), a ``patch_mask`` with
``patch_mask_ratio`` of the patches chosen at random (fresh every epoch: dynamic masking), and
``labels`` holding the normalised pixels of the masked patches (NaN elsewhere). The model's
patch embedding replaces the masked patches by a learned mask vector (``embedding.mask_patches:
true``), and the ``masked_patch`` head regresses their pixels. The streams' token ``mask_prob``
does not apply here: ``patch_mask_ratio`` sets the share. ``preprocess --workers K`` decodes
the images in K processes; ``--skip-bad-lines`` leaves out (counted, logged) the rows whose image
is missing or cannot be decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pretrainkit.data.instances import EpochOrder, InstanceStream, check_state
from pretrainkit.data.objectives.base import OBJECTIVES, Objective
from pretrainkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pretrainkit.data.corpus import CorpusFile
    from pretrainkit.data.shards import Shards
    from pretrainkit.tokenization import Tokenizer

_IMAGES_PER_CHUNK = 256


@dataclass
class MaskedPatchOptions:
    image_size: int = 224
    """Side in pixels every image is resized to (the model's embedding.image_size)."""
    channels: int = 3
    """1 (grey) or 3 (RGB): the model's embedding.channels."""
    patch_size: int = 16
    """Side of a patch in pixels (the model's embedding.patch_size)."""
    patch_mask_ratio: float = 0.5
    """Share of each image's patches replaced by the mask vector and predicted (at least one)."""

    def __post_init__(self) -> None:
        for key in ("image_size", "patch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.patch_mask_ratio, (int, float)) or not 0 < self.patch_mask_ratio < 1:
            raise ConfigError(f"patch_mask_ratio must be in (0, 1), got {self.patch_mask_ratio!r}")

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class MaskedPatch(Objective):
    name = "masked_patch"
    targets = frozenset({"masked_patch"})
    min_seq_length = 2
    options_class = MaskedPatchOptions

    def check(self, seq_length: int, tokenizer: Tokenizer) -> None:
        # seq_length is the model's sequence: every patch plus [CLS].
        expected = self.options.patches + 1
        if seq_length != expected:
            raise ConfigError(
                f"masked_patch: seq_length must be {expected}, the {self.options.patches} patches "
                f"of a {self.options.image_size}-pixel image in {self.options.patch_size}-pixel "
                f"patches plus [CLS]; got {seq_length}"
            )

    def encode_corpus(
        self,
        paths: list[Path],
        infos: list[CorpusFile],
        dtype: np.dtype,
        log: Callable[[str], object],
        workers: int = 1,
        skip_bad_lines: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``preprocess``'s chunks for image TSVs: (pixel bytes, values per image, 1 per
        document), each image one document of one "sentence". ``workers`` processes decode the
        images; with ``skip_bad_lines`` a bad row or an image that cannot be read or decoded
        is left out, counted in ``info.skipped_lines`` and said in the log."""
        from pretrainkit.data.image_workers import decode_image_chunks
        from pretrainkit.data.images import read_image_tsv
        from pretrainkit.fileio import read_input

        size, channels = self.options.image_size, self.options.channels
        tables = []  # every file's rows are checked before any image is decoded
        for path, info in zip(paths, infos):
            raw = read_input(path, "corpus file")
            info.bytes, info.sha256 = len(raw), hashlib.sha256(raw).hexdigest()
            info.lines = raw.count(b"\n") + (not raw.endswith(b"\n"))
            tables.append(read_image_tsv(path, require_labels=False, skip_bad_rows=skip_bad_lines))
        chunks = (
            (index, [(str(data.images[r]), data.lines[r]) for r in range(start, end)])
            for index, data in enumerate(tables)
            for start in range(0, len(data), _IMAGES_PER_CHUNK)
            for end in [min(start + _IMAGES_PER_CHUNK, len(data))]
        )
        skipped = [list(data.skipped) for data in tables]  # per file: (line, what is wrong)
        kept = [0] * len(paths)
        reported = 0  # the files before this one are done: chunks come in file order
        decoded = decode_image_chunks(chunks, paths, size, channels, workers)
        # closing: a DataError below ends the helper processes at once, not when collected.
        with contextlib.closing(decoded):
            for index, pixels, failures in decoded:
                if failures and not skip_bad_lines:
                    raise DataError(failures[0][1], paths[index], failures[0][0])
                skipped[index] += failures
                kept[index] += len(pixels)
                for done in range(reported, index):
                    _report(paths[done], infos[done], kept[done], skipped[done], self.options, log)
                reported = index
                if len(pixels):
                    values = pixels.astype(dtype).reshape(-1)
                    lengths = np.full(len(pixels), pixels.shape[1], dtype=np.int64)
                    yield values, lengths, np.ones(len(pixels), dtype=np.int64)
        for done in range(reported, len(paths)):
            _report(paths[done], infos[done], kept[done], skipped[done], self.options, log)

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        return MaskedPatchStream(shards, self.options, seq_length, seed, rank, world_size)

    def collate(self, instances: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        import torch

        # Images share one size: stacking is all, there is no padding.
        return {
            key: torch.from_numpy(np.stack([i[key] for i in instances]))
            for key in ("pixel_values", "patch_mask", "labels")
        }


def _report(
    path: Path,
    info: CorpusFile,
    kept: int,
    skipped: list[tuple[int, str]],
    options: MaskedPatchOptions,
    log: Callable[[str], object],
) -> None:
    """One file's line in the log; its skipped rows are counted in ``info.skipped_lines``."""
    info.skipped_lines = len(skipped)
    size, channels = options.image_size, options.channels
    log(f"read {path} ({kept:,} images of {channels}x{size}x{size})")
    if skipped:
        first = "; ".join(f"line {line}: {why}" for line, why in sorted(skipped)[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        log(f"warning: {path}: skipped {len(skipped)} bad rows ({first}{more})")


def patchify(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """``[c, s, s]`` → ``[patches, c·p·p]``, patches row by row as the patch embedding reads
    them."""
    channels, size, _ = pixels.shape
    grid = size // patch_size
    blocks = pixels.reshape(channels, grid, patch_size, grid, patch_size)
    return blocks.transpose(1, 3, 0, 2, 4).reshape(grid * grid, -1)


class MaskedPatchStream(InstanceStream):
    """Images from the shards in a seeded epoch order, each with a fresh seeded patch mask."""

    def __init__(
        self,
        shards: Shards,
        options: MaskedPatchOptions,
        seq_length: int,
        seed: int,
        rank: int,
        world_size: int,
    ):
        self.shards, self.options, self.seq_length, self.seed = shards, options, seq_length, seed
        self.objective = "masked_patch"
        if shards.num_documents < world_size:
            raise DataError(
                f"{shards.num_documents} images cannot be shared by {world_size} processes",
                shards.directory,
            )
        self.order = EpochOrder(shards.num_documents, seed, rank, world_size)
        self.per_image = options.channels * options.image_size**2
        # The pixels were stored at preprocess's size: other values would read several
        # images as one (or one across two), not resize them.
        if shards.num_tokens != shards.num_documents * self.per_image:
            stored = shards.manifest.get("objective_options", {})
            raise ConfigError(
                f"{shards.directory}: the shards hold {shards.num_documents} images of "
                f"{shards.num_tokens // max(shards.num_documents, 1)} values (image_size "
                f"{stored.get('image_size')}, channels {stored.get('channels')}), not of "
                f"channels {options.channels} x image_size {options.image_size}²; image_size "
                "and channels are fixed by preprocess"
            )

    def __next__(self) -> dict[str, np.ndarray]:
        from pretrainkit.data.images import MEAN, STD

        epoch, slot, image = self.order.current()
        self.order.advance()
        first, _ = self.shards.document_sentences(image)
        start = self.shards.sentence_start(first)
        values = self.shards.read_tokens(start, start + self.per_image)
        size = self.options.image_size
        pixels = ((values / 255.0 - MEAN) / STD).astype(np.float32)
        pixels = pixels.reshape(self.options.channels, size, size)  # [c, s, s]
        patches = self.options.patches
        count = min(patches, max(1, round(self.options.patch_mask_ratio * patches)))
        rng = np.random.default_rng([self.seed, epoch, slot])
        mask = np.zeros(patches, dtype=bool)
        mask[rng.choice(patches, size=count, replace=False)] = True
        labels = patchify(pixels, self.options.patch_size)  # [patches, c·p·p]
        labels[~mask] = np.nan  # like -100: not predicted
        return {"pixel_values": pixels, "patch_mask": mask, "labels": labels}

    def _identity(self) -> dict:
        return {
            "objective": self.objective,
            "seq_length": self.seq_length,
            "seed": self.seed,
            "rank": self.order.rank,
            "world_size": self.order.world_size,
            "content_hash": self.shards.manifest.get("content_hash"),
            "options": {
                "image_size": self.options.image_size,
                "channels": self.options.channels,
                "patch_size": self.options.patch_size,
                "patch_mask_ratio": self.options.patch_mask_ratio,
            },
        }

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)


OBJECTIVES.register("masked_patch")(MaskedPatch())
