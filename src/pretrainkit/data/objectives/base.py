"""The objective seam: what ``preprocess`` records and ``pretrain`` streams."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pretrainkit.errors import ConfigError
from pretrainkit.registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from pretrainkit.data.corpus import CorpusFile
    from pretrainkit.data.instances import InstanceStream
    from pretrainkit.data.shards import Shards
    from pretrainkit.tokenization import Tokenizer


class Objective:
    """A pre-training objective. Subclasses set the class attributes and ``stream``."""

    name: ClassVar[str]
    targets: ClassVar[frozenset[str]]
    """The model targets that train on its instances (exactly these, or a head is ignored)."""
    min_seq_length: ClassVar[int]
    """The fewest positions that leave room for the special tokens and one real token a side."""
    masks: ClassVar[bool] = False
    """Whether it masks tokens (the tokenizer then needs a mask token)."""
    options_class: ClassVar[type | None] = None
    """A dataclass of its settable options (CLI flags, recorded in the shard manifest)."""
    options: Any = None
    """The options in force: an ``options_class`` instance (defaults in the registered one)."""
    packable: ClassVar[bool] = False
    """Whether its instances are one token sequence each, read by targets that need no other
    row of the batch, so that ``pretrain --pack`` may pack them (``collate_packed``)."""

    def __init__(self) -> None:
        self.options = self.options_class() if self.options_class is not None else None

    def configured(self, values: dict[str, Any] | None) -> Objective:
        """A copy of this objective with ``values`` (option name → value) applied on top of
        its current options; an unknown name or a bad value is a ConfigError."""
        from pretrainkit.config.typed import from_dict

        if not values:
            return self
        if self.options_class is None:
            raise ConfigError(
                f"objective {self.name!r} has no options, got {', '.join(sorted(values))}"
            )
        merged = {**self.options_dict(), **values}
        configured = copy.copy(self)
        configured.options = from_dict(self.options_class, merged, f"{self.name} options")
        return configured

    def options_dict(self) -> dict[str, Any]:
        """The options in force as a JSON-ready mapping (empty when it has none)."""
        return {} if self.options is None else dataclasses.asdict(self.options)

    def prepare_tokenizer(self, tokenizer: Tokenizer, seq_length: int) -> Tokenizer:
        """The tokenizer ``preprocess`` saves with the shards: this one, or a copy with the
        tokens the objective needs at ``seq_length`` (sentinels, mask tokens) added."""
        return tokenizer

    def check(self, seq_length: int, tokenizer: Tokenizer) -> None:
        """Raise ConfigError when the length or the tokenizer cannot work with it."""
        if seq_length < self.min_seq_length:
            raise ConfigError(
                f"seq_length {seq_length} is too short for {self.name} "
                f"(at least {self.min_seq_length})"
            )
        if self.masks and tokenizer.mask_id is None:
            raise ConfigError(
                f"objective {self.name!r} masks tokens, but this {tokenizer.kind} tokenizer has "
                "no mask token; use objective 'lm' or a vocabulary with a mask token"
            )

    def read_documents(
        self, path: Path, skip_bad_lines: bool, info: CorpusFile
    ) -> Iterator[list[str]]:
        """The documents of one corpus file, each a list of non-empty text pieces that
        ``preprocess`` tokenizes one by one (the shards' "sentences").

        The default reads plain text (one sentence a line, a blank line between documents) and
        JSONL ``{"text": ...}``. An objective whose corpus has another shape (parallel text,
        instruction records) overrides it; its stream then reads the pieces back by index.
        Bad lines raise a DataError naming file and line, or with ``skip_bad_lines`` are
        counted in ``info.skipped_lines``.
        """
        from pretrainkit.data.corpus import read_documents

        return read_documents(path, skip_bad_lines, info)

    def encode_corpus(
        self,
        paths: list[Path],
        infos: list[CorpusFile],
        dtype: np.dtype,
        log: Callable[[str], object],
        workers: int = 1,
        skip_bad_lines: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """For a corpus that is not text (images): the shard chunks ``(values, values per
        "sentence", "sentences" per document)`` ``preprocess`` writes, with ``infos`` filled in,
        honouring ``preprocess``'s ``workers`` and ``skip_bad_lines`` (counted in
        ``infos[i].skipped_lines``). None (the default): a text corpus, whose
        ``read_documents`` ``preprocess`` tokenizes."""
        return None

    def stream(
        self,
        shards: Shards,
        seq_length: int,
        seed: int,
        mask_prob: float,
        rank: int,
        world_size: int,
    ) -> InstanceStream:
        """The endless, seeded, resumable stream of its instances."""
        raise NotImplementedError

    def collate(self, instances: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        """Instances → one padded batch of tensors (the shared padding collate by default)."""
        from pretrainkit.data.batching import collate  # torch: not for preprocessing workers

        return collate(instances, pad_id)

    def check_packable(self) -> None:
        """Raise ConfigError unless ``pretrain --pack`` may pack its instances."""
        if not self.packable:
            raise ConfigError(
                f"--pack: objective {self.name!r} cannot be packed, its instances are not one "
                "token sequence each read by per-example targets (packable objectives: "
                f"{', '.join(n for n in OBJECTIVES.names() if OBJECTIVES.get(n).packable)})"
            )

    def collate_packed(self, instances: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        """Instances → one packed batch (``data.batching.collate_packed``: several instances a
        row, block-diagonal attention), for ``pretrain --pack``; only when ``packable``."""
        self.check_packable()
        from pretrainkit.data.batching import collate_packed  # torch: not for workers

        return collate_packed(instances, pad_id)

    def check_targets(self, target_names: list[str], where: str) -> None:
        """Raise ConfigError unless the model trains exactly this objective's targets."""
        if set(target_names) != self.targets:
            raise ConfigError(
                f"{where}: the data was preprocessed for objective {self.name!r}, which trains "
                f"targets {sorted(self.targets)}, but the model has targets {target_names}. "
                f"Preprocess with the matching --objective or set the model's targets "
                f"(e.g. --model.targets '[{{name: mlm}}]')."
            )


OBJECTIVES: Registry[Objective] = Registry("objective")


def get_objective(name: str) -> Objective:
    """The registered objective ``name`` (an error listing the valid names otherwise)."""
    return OBJECTIVES.get(name)
