"""``prompt``: classification as a cloze question for a masked LM (PET / LM-BFF style).

Each row is put into a template with a mask slot, ``{text_a} It was {mask} .``, and each label
has a word, ``0:terrible,1:great``; a label's score is the MLM logit of its word at the mask, and
training is the cross-entropy over the labels' words there. The head is the masked-LM head
(``cloze`` target, parameters named as ``mlm``'s), so what pre-training taught it is usable from
the first step once the workflow hands it over (``initial_head``).

Files are classification TSVs (``label<TAB>text_a[<TAB>text_b]``, ``read_classification_tsv``).
The label set is the label words' labels, in the order written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.batching import collate
from pretrainkit.data.instances import RowStream
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.tasks.base import TASKS, Task, TaskOptions
from pretrainkit.tasks.classification import width_defaults
from pretrainkit.tasks.metrics import classification_metrics
from pretrainkit.tasks.tsv import ClassificationData, read_classification_tsv
from pretrainkit.tokenization import Tokenizer
from pretrainkit.tokenization.base import truncated_lengths

if TYPE_CHECKING:  # targets import torch.nn at the top: not while the CLI parses
    from pretrainkit.targets.base import Target

log = logging.getLogger(__name__)

SLOTS = ("text_a", "text_b", "mask")
_SLOT = re.compile(r"\{(\w*)\}")
IGNORE = -100


@dataclass(frozen=True)
class Part:
    """One piece of a template: literal text, or a slot (``text_a``, ``text_b``, ``mask``).

    ``space``: whitespace precedes it in the template. Byte-level BPE vocabularies spell a word
    differently after a space ("Ġgreat"), so each piece is tokenized as it would be in place.
    """

    kind: str
    text: str = ""
    space: bool = False


def parse_template(template: str) -> list[Part]:
    """The pieces of a template; a ConfigError for an empty one, an unknown slot, a slot
    written twice, or a missing ``{mask}`` or ``{text_a}``."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigError("template is empty; e.g. '{text_a} It was {mask} .'")
    parts: list[Part] = []
    pending_space = False
    for i, piece in enumerate(_SLOT.split(template)):
        if i % 2:  # a slot name
            if piece not in SLOTS:
                raise ConfigError(
                    f"template: unknown slot {{{piece}}}{closest(piece, SLOTS)}; slots: "
                    "{text_a}, {text_b}, {mask}"
                )
            if any(p.kind == piece for p in parts):
                raise ConfigError(f"template: the slot {{{piece}}} appears twice in {template!r}")
            parts.append(Part(piece, space=pending_space))
            pending_space = False
        elif piece:
            if piece.strip():
                space = pending_space or piece[0].isspace()
                parts.append(Part("text", piece.strip(), space))
            pending_space = piece[-1].isspace() or (pending_space and not piece.strip())
    for needed in ("mask", "text_a"):
        if not any(p.kind == needed for p in parts):
            raise ConfigError(
                f"template {template!r} has no {{{needed}}} slot; e.g. '{{text_a}} It was "
                "{mask} .' (the mask slot is written {mask} whatever the tokenizer's mask token)"
            )
    return parts


def parse_label_words(text: str) -> dict[str, str]:
    """``"0:terrible,1:great"`` → ``{"0": "terrible", "1": "great"}`` (label → word, in the
    order written); a ConfigError for anything else."""
    example = "e.g. '0:terrible,1:great'"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"label_words is empty; give label:word pairs, {example}")
    words: dict[str, str] = {}
    for item in text.split(","):
        label, sep, word = (s.strip() for s in item.partition(":"))
        if not sep or not label or not word:
            raise ConfigError(f"label_words: {item.strip()!r} is not label:word ({example})")
        if label in words:
            raise ConfigError(f"label_words: label {label!r} has two words")
        if word in words.values():
            raise ConfigError(f"label_words: the word {word!r} stands for two labels")
        words[label] = word
    if len(words) < 2:
        raise ConfigError(f"label_words: a classifier needs at least two labels ({example})")
    return words


@dataclass
class PromptOptions(TaskOptions):
    template: str = "{text_a} It was {mask} ."
    """The cloze question: {text_a}, optionally {text_b}, and the {mask} slot whose word gives
    the label (written {mask} whatever the tokenizer's mask token is)."""
    label_words: str = "0:terrible,1:great"
    """One word per label, label:word,...; each word must be one token of the vocabulary."""

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_template(self.template)
        parse_label_words(self.label_words)


class Prompt:
    """A template bound to a tokenizer: turns rows into inputs with exactly one mask token.

    Raises:
        ConfigError: a tokenizer without a mask token; a template whose fixed words already
            contain the mask token, or leave no room for the text in ``seq_length``; a label
            word that is not exactly one token of the vocabulary (naming how it tokenises).
    """

    def __init__(self, options: PromptOptions, tokenizer: Tokenizer):
        if tokenizer.mask_id is None:
            raise ConfigError("prompt: the tokenizer has no mask token; the task needs a masked LM")
        self.options, self.tokenizer, self.mask_id = options, tokenizer, tokenizer.mask_id
        self.parts = parse_template(options.template)
        self.literals = {
            i: tokenizer.encode(self._spelled(part, part.text))
            for i, part in enumerate(self.parts)
            if part.kind == "text"
        }
        for ids in self.literals.values():
            if self.mask_id in ids:
                raise ConfigError(
                    f"template {options.template!r} contains the mask token as text; write the "
                    "mask slot as {mask}"
                )
        mask = next(p for p in self.parts if p.kind == "mask")
        self.word_ids = [
            self._word_id(word, self._spelled(mask, word))
            for word in parse_label_words(options.label_words).values()
        ]
        fixed = sum(map(len, self.literals.values())) + 1 + tokenizer.template.num_special(False)
        self.budget = options.seq_length - fixed  # tokens left for the texts
        if self.budget < 1:
            raise ConfigError(
                f"seq_length {options.seq_length} leaves no room for the text: the template's "
                f"words, its mask and the special tokens take {fixed}"
            )

    @staticmethod
    def _spelled(part: Part, text: str) -> str:
        return f" {text}" if part.space else text

    def _word_id(self, word: str, spelled: str) -> int:
        ids = self.tokenizer.encode(spelled)
        if len(ids) == 1 and ids[0] != self.tokenizer.unk_id:
            return ids[0]
        pieces = [self.tokenizer.id_to_token(i) for i in ids]
        raise ConfigError(
            f"label word {word!r} is not one token of the model's vocabulary: it tokenises as "
            f"{pieces}; choose a word the vocabulary holds whole"
        )

    def has(self, slot: str) -> bool:
        return any(part.kind == slot for part in self.parts)

    def encode_texts(self, texts: list[str], slot: str) -> list[list[int]]:
        """Ids of one slot's texts as spelled in place; a mask token typed in the text becomes
        the unknown token, so that the input has exactly one mask (the slot's)."""
        part = next(p for p in self.parts if p.kind == slot)
        rows = self.tokenizer.encode_batch([self._spelled(part, text) for text in texts])
        unk = self.tokenizer.unk_id
        return [[unk if i == self.mask_id else i for i in ids] for ids in rows]

    def build(self, a: list[int], b: list[int] | None) -> tuple[list[int], list[int], int]:
        """``(input_ids, token_type_ids, mask position)``; the texts (never the template) are
        cut, the longer one first, to fit ``seq_length``."""
        len_a, len_b = truncated_lengths(len(a), len(b or []), self.budget)
        texts = {"text_a": a[:len_a], "text_b": (b or [])[:len_b], "mask": [self.mask_id]}
        ids: list[int] = []
        for i, part in enumerate(self.parts):
            ids += self.literals[i] if part.kind == "text" else texts[part.kind]
        input_ids, token_types = self.tokenizer.build_inputs(ids, None)
        return input_ids, token_types, input_ids.index(self.mask_id)


def _texts(prompt: Prompt, data: ClassificationData) -> tuple[list[list[int]], Any]:
    if data.texts_b is not None and not prompt.has("text_b"):
        raise ConfigError(
            f"{data.path} has a text_b column but the template has no {{text_b}} slot; add one "
            "(e.g. '{text_a} ? {mask} , {text_b}') so the second text is not ignored"
        )
    if data.texts_b is None and prompt.has("text_b"):
        raise DataError("the template has a {text_b} slot but the file has no text_b", data.path)
    ids_b = prompt.encode_texts(data.texts_b, "text_b") if data.texts_b is not None else None
    return prompt.encode_texts(data.texts_a, "text_a"), ids_b


class PromptStream(RowStream):
    """Endless stream of filled-in templates, reshuffled every epoch; ``labels`` are MLM
    labels: -100 but at the mask, which holds the gold label's word id."""

    def __init__(
        self,
        data: ClassificationData,
        prompt: Prompt,
        label_set: list[str],
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if data.labels is None:
            raise DataError("has no labels; training needs a label column", data.path)
        self.start(len(data), seed, rank, world_size, data.path)
        self.prompt, self.seq_length, self.seed = prompt, seq_length, seed
        word_of = dict(zip(label_set, prompt.word_ids))
        self.words = [word_of[label] for label in data.labels]  # labels checked by read
        self.ids_a, self.ids_b = _texts(prompt, data)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        b = self.ids_b[row] if self.ids_b is not None else None
        input_ids, token_types, mask = self.prompt.build(self.ids_a[row], b)
        labels = np.full(len(input_ids), IGNORE, dtype=np.int64)
        labels[mask] = self.words[row]
        return {
            "input_ids": np.asarray(input_ids, dtype=np.int64),
            "token_type_ids": np.asarray(token_types, dtype=np.int64),
            "labels": labels,
        }


@TASKS.register("prompt")
class PromptClassification(Task):
    """Rows ``label<TAB>text_a[<TAB>text_b]`` asked as a cloze question; accuracy and
    macro-F1; the prediction file holds ``label<TAB>probability`` (softmax over the words)."""

    name = "prompt"
    options_class = PromptOptions
    metric_names = ("accuracy", "macro_f1")

    def __init__(self, options: TaskOptions | None = None, labels: list[str] | None = None):
        super().__init__(options, labels)
        self.words = parse_label_words(self.options.label_words)
        self.label_set = list(self.words)  # the label set is the label words'
        self.labels = self.label_set
        self._prompt: Prompt | None = None

    def prompt(self, tokenizer: Tokenizer) -> Prompt:
        """The template bound to ``tokenizer`` (checked once per tokenizer and options: the
        workflow may replace the options, e.g. ``evaluate --seq-length``)."""
        bound = self._prompt
        if bound is None or bound.tokenizer is not tokenizer or bound.options is not self.options:
            bound = self._prompt = Prompt(self.options, tokenizer)
        return bound

    def prepare(self, tokenizer: Tokenizer) -> None:
        """Bind the pre-trained model's tokenizer before ``target()``, so that the head scores
        only the label words (proposed seam; without it the head scores the vocabulary)."""
        self.prompt(tokenizer)

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> ClassificationData:
        data = read_classification_tsv(path, require_labels=require_labels, columns=columns)
        for row, label in enumerate(data.labels or []):
            if label not in self.words:
                raise DataError(
                    f"label {label!r} has no label word (label_words: "
                    f"{self.options.label_words}){closest(label, self.words)}",
                    data.path,
                    data.first_line + row,
                )
        return data

    def stream(
        self, data: ClassificationData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> PromptStream:
        return PromptStream(
            data,
            self.prompt(tokenizer),
            self.label_set,
            self.options.seq_length,
            seed,
            rank,
            world_size,
        )

    def batches(
        self, data: ClassificationData, tokenizer: Tokenizer, batch_size: int
    ) -> Iterator[dict]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        prompt = self.prompt(tokenizer)
        ids_a, ids_b = _texts(prompt, data)
        for start in range(0, len(data), batch_size):
            instances, masks = [], []
            for row in range(start, min(start + batch_size, len(data))):
                b = ids_b[row] if ids_b is not None else None
                input_ids, token_types, mask = prompt.build(ids_a[row], b)
                instances.append(
                    {
                        "input_ids": np.asarray(input_ids, dtype=np.int64),
                        "token_type_ids": np.asarray(token_types, dtype=np.int64),
                    }
                )
                masks.append(mask)
            # "_": the task's own key, not a model input (row_outputs reads the mask there).
            yield collate(instances, tokenizer.pad_id) | {"_mask_position": torch.tensor(masks)}

    def target(self) -> TargetConfig:
        # The word ids need the tokenizer: known when the workflow called prepare().
        ids = self._prompt.word_ids if self._prompt is not None else []
        return TargetConfig("cloze", {"word_ids": list(ids)} if ids else {})

    def initial_head(self, base: dict[str, Target]) -> dict[str, torch.Tensor]:
        """The pre-trained model's ``mlm`` head weights for the ``cloze`` head (same names);
        empty when the base has none (the head then starts fresh). Proposed seam."""
        mlm = base.get("mlm")
        if mlm is None:
            log.warning("prompt: the base model has no mlm head; the cloze head starts fresh")
            return {}
        return {key: value.detach().clone() for key, value in mlm.state_dict().items()}

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        masks = batch["_mask_position"].to(logits.device)
        at_mask = logits[torch.arange(logits.shape[0], device=logits.device), masks]  # [b, C]
        if at_mask.shape[-1] != len(self.label_set):  # a head over the whole vocabulary
            if self._prompt is None:
                raise ConfigError("prompt: row_outputs needs the batches of this task")
            at_mask = at_mask[:, self._prompt.word_ids]
        return list(at_mask.double().cpu().numpy())

    def gold(self, data: ClassificationData) -> list[int]:
        if data.labels is None:
            raise DataError("has no labels to score against", data.path)
        index = {label: i for i, label in enumerate(self.label_set)}
        return [index[label] for label in data.labels]

    def metrics(self, outputs: list[np.ndarray], gold: list[int]) -> dict[str, float]:
        predicted = np.array([int(row.argmax()) for row in outputs], dtype=np.int64)
        return classification_metrics(
            predicted, np.array(gold, dtype=np.int64), len(self.label_set)
        )

    def prediction_lines(self, outputs: list[np.ndarray], data: Any = None) -> list[str]:
        lines = ["label\tprobability"]
        for row in outputs:
            probs = torch.from_numpy(row).softmax(-1).numpy()
            lines.append(f"{self.label_set[int(probs.argmax())]}\t{probs.max():.6f}")
        return lines

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)
