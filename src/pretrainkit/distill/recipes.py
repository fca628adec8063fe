"""Distillation recipes: which losses, on which data, scored how. One class per recipe in
``RECIPES``; ``pretrainkit distill --recipe NAME`` runs it through the one training loop.

- ``task``: a fine-tuned teacher's task (its ``task.json``) on that task's training file:
  soft labels, hidden states (and optionally attention maps, the embedding output) plus the
  gold labels; scored with the task's metrics on ``--dev``.
- ``layerwise``: masked text from pre-training shards: hidden states and attention maps layer
  by layer (LightMBERT, TinyBERT's general distillation); scored by the student's loss on
  held-out shards.
- ``sentence``: parallel sentences (``source<TAB>translation``): the student's vectors of both
  sides regress the teacher's vector of the source (MSE) and/or are contrasted with the
  teacher's vectors of the batch (InfoNCE); the teacher's vectors are computed once and cached.
  Scored by the Spearman correlation of cosines on an STS file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pretrainkit.distill.losses import (
    AttentionMaps,
    HiddenStates,
    InfoNCE,
    SentenceMSE,
    SoftLabels,
    parse_layer_map,
)
from pretrainkit.distill.module import Distiller
from pretrainkit.distill.options import (
    LayerLossOptions,
    LayerwiseOptions,
    SentenceOptions,
    TaskDistillOptions,
)
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.model import Model
from pretrainkit.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every recipe gets besides the two models."""

    data: list[str]
    dev: str | None
    batch_size: int
    seed: int
    rank: int
    world_size: int
    columns: tuple[str, ...] | None = None
    eval_batches: int = 20


@dataclass
class Plan:
    """A recipe's answer: the model the loop trains, its batches, how the student is scored."""

    model: Distiller
    batches: Any
    evaluate: Callable[[nn.Module], dict[str, float]] | None
    record: dict[str, Any]


class Recipe:
    name: ClassVar[str]
    options_class: ClassVar[type]

    def __init__(self, options: Any):
        self.options = options

    def plan(self, teacher: Model, student: Model, context: Context) -> Plan:
        raise NotImplementedError


RECIPES: Registry[type[Recipe]] = Registry("recipe")


def token_losses(
    options: LayerLossOptions, teacher: Model, student: Model
) -> dict[str, tuple[float, nn.Module]]:
    """The components with a weight above 0."""
    layers = parse_layer_map(
        options.layer_map, student.config.encoder.num_layers, teacher.config.encoder.num_layers
    )
    sizes = (student.config.hidden_size, teacher.config.hidden_size)
    built: dict[str, tuple[float, nn.Module]] = {}
    if options.soft_weight > 0:
        built["soft"] = (options.soft_weight, SoftLabels(options.temperature))
    if options.hidden_weight > 0:
        built["hidden"] = (options.hidden_weight, HiddenStates(layers, *sizes))
    if options.embedding_weight > 0:
        built["embedding"] = (options.embedding_weight, HiddenStates([(0, 0)], *sizes))
    if options.attention_weight > 0:
        maps = AttentionMaps(layers, options.attention_loss, options.attention_heads)
        built["attention"] = (options.attention_weight, maps)
    return built


def same_vocabulary(teacher: Model, student: Model) -> None:
    """Position-by-position losses need one tokenization of the batch."""
    t, s = teacher.tokenizer, student.tokenizer
    same = t is not None and s is not None and t.vocab_size == s.vocab_size
    if same and t is not s:
        same = all(t.id_to_token(i) == s.id_to_token(i) for i in range(t.vocab_size))
    if not same:
        raise ConfigError(
            "this recipe compares teacher and student token by token: they need the same "
            "tokenizer (the student's differs; use --recipe sentence for another vocabulary)"
        )


@RECIPES.register("task")
class TaskRecipe(Recipe):
    """Task distillation: the teacher is a fine-tuned folder; the student gets its task."""

    name = "task"
    options_class = TaskDistillOptions

    def plan(self, teacher: Model, student: Model, context: Context) -> Plan:
        from pretrainkit.data import BatchIterator
        from pretrainkit.tasks import task_of
        from pretrainkit.workflows.finetune import model_outputs, task_model

        same_vocabulary(teacher, student)
        spec = task_of(teacher, "--teacher")
        if spec.packs:
            # The distiller runs the slots itself on plain rows (``distill.states``); a teacher
            # fine-tuned with packed batches is distilled from padded ones.
            spec.options = dataclasses.replace(spec.options, pack=False)
        data = spec.read(one_file(context.data, self.name), columns=context.columns)
        net = task_model(student, spec)
        _keep_head(student, net, spec.name)
        losses = token_losses(self.options, teacher, net)
        model = Distiller(teacher, net, losses, self.options.hard_weight)
        gold_rows = len(data)
        if self.options.crops:
            data = with_crops(spec.name, data, self.options.crops, context.seed)
        stream: Any = spec.stream(
            data, net.tokenizer, context.seed, context.rank, context.world_size
        )
        if self.options.crops:
            stream = TeacherOnlyRows(stream, gold_rows)
        batches = BatchIterator(stream, context.batch_size, net.tokenizer.pad_id, spec.collate)
        evaluate = None
        if context.dev is not None:
            dev = spec.read(context.dev, columns=context.columns)

            def evaluate(m: nn.Module) -> dict[str, float]:
                return spec.metrics(model_outputs(net, spec, dev), spec.gold(dev))

        record = {"task": spec.record(), "rows": gold_rows, "crop_rows": len(data) - gold_rows}
        return Plan(model, batches, evaluate, record)


def with_crops(task: str, data: Any, per_row: int, seed: int) -> Any:
    """``data`` followed by ``per_row`` random word spans of every row (each at least half
    the row's words; rows of fewer than 4 words give none). Labels are copied only to keep
    the rows' shape: ``TeacherOnlyRows`` hides them from the gold loss."""
    from pretrainkit.tasks.tsv import ClassificationData

    if task != "classification" or not isinstance(data, ClassificationData) or data.texts_b:
        raise ConfigError("crops: supported for single-text classification data only")
    assert data.labels is not None
    rng = np.random.default_rng(seed)
    texts, labels = list(data.texts_a), list(data.labels)
    for text, label in zip(data.texts_a, data.labels):
        words = text.split()
        if len(words) < 4:
            continue
        for _ in range(per_row):
            length = int(rng.integers((len(words) + 1) // 2, len(words)))  # a proper span
            start = int(rng.integers(0, len(words) - length + 1))
            texts.append(" ".join(words[start : start + length]))
            labels.append(label)
    return ClassificationData(data.path, texts, None, labels, data.first_line)


class TeacherOnlyRows:
    """A task stream whose rows from ``gold_rows`` on carry no gold label (-100): the teacher's
    soft labels alone teach them."""

    def __init__(self, stream: Any, gold_rows: int):
        self.stream, self.gold_rows = stream, gold_rows

    def __iter__(self) -> TeacherOnlyRows:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.stream.order.current()
        instance = next(self.stream)
        if row >= self.gold_rows:
            instance["labels"] = np.asarray(-100, dtype=np.int64)
        return instance

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def load_reader_states(self, states: list[dict]) -> Any:
        """Resume on another number of data-parallel readers (the task stream re-splits its
        global order; which rows are teacher-only depends on the row alone)."""
        return self.stream.load_reader_states(states)


def _keep_head(source: Model, net: Model, task: str) -> None:
    """A student folder fine-tuned on the same task keeps its head (the teacher's, when the
    student is cut from the teacher)."""
    record = source.task_record or {}
    if record.get("name") != task:
        return
    theirs = {k: v for k, v in source.targets.state_dict().items()}
    ours = net.targets.state_dict()
    if theirs.keys() == ours.keys() and all(theirs[k].shape == ours[k].shape for k in ours):
        net.targets.load_state_dict(theirs)
        log.info("the student keeps the %s head of its folder", task)


def one_file(data: list[str], recipe: str) -> str:
    if len(data) != 1:
        raise ConfigError(f"recipe {recipe}: --data takes one file, got {len(data)}")
    return data[0]


@RECIPES.register("layerwise")
class LayerwiseRecipe(Recipe):
    """Masked text from pre-training shards; the student imitates layers and attention."""

    name = "layerwise"
    options_class = LayerwiseOptions

    def plan(self, teacher: Model, student: Model, context: Context) -> Plan:
        from pretrainkit.data import BatchIterator, Shards, pretraining_stream
        from pretrainkit.data.objectives import get_objective
        from pretrainkit.workflows.pretrain import heldout_evaluator

        same_vocabulary(teacher, student)
        shards = Shards.open(one_file(context.data, self.name))
        objective = shards.manifest["objective"]
        targets = [t.name for t in student.config.targets]
        if self.options.hard_weight > 0 or self.options.soft_weight > 0:
            get_objective(objective).check_targets(targets, "the student")
        options = shards.manifest.get("objective_options", {})
        stream = pretraining_stream(
            shards, seed=context.seed, rank=context.rank, world_size=context.world_size,
            options=options,
        )  # fmt: skip
        collate = get_objective(objective).collate
        batches = BatchIterator(stream, context.batch_size, shards.tokenizer.pad_id, collate)
        losses = token_losses(self.options, teacher, student)
        model = Distiller(teacher, student, losses, self.options.hard_weight)
        evaluate = None
        if context.dev is not None:
            held_out = heldout_evaluator(
                context.dev, shards.tokenizer, objective, context.batch_size,
                context.eval_batches, options,
            )  # fmt: skip

            def evaluate(m: nn.Module) -> dict[str, float]:
                return held_out(m)  # the distillation losses on fixed held-out batches

        record = {"objective": objective, "shards": str(shards.directory)}
        return Plan(model, batches, evaluate, record)


@RECIPES.register("sentence")
class SentenceRecipe(Recipe):
    """The student learns the teacher's sentence space in its own vocabulary."""

    name = "sentence"
    options_class = SentenceOptions

    def plan(self, teacher: Model, student: Model, context: Context) -> Plan:
        from pretrainkit.data import BatchIterator
        from pretrainkit.distill.parallel import ParallelStream, collate_views, read_parallel
        from pretrainkit.encoding import encode

        options = self.options
        if student.config.hidden_size != teacher.config.hidden_size:
            raise ConfigError(
                f"recipe sentence: the student's hidden size {student.config.hidden_size} "
                f"differs from the teacher's {teacher.config.hidden_size}; its vectors must "
                "live in the teacher's space"
            )
        if student.tokenizer is None:
            raise ConfigError("recipe sentence: the student has no tokenizer")
        data = read_parallel(context.data)
        pooling = teacher.encode_defaults.get("pooling", "mean")
        student.encode_defaults = {**teacher.encode_defaults, **student.encode_defaults}
        # The teacher's vectors of the distinct sources, computed once: it never changes.
        distinct = list(dict.fromkeys(data.sources))
        row_of = {text: i for i, text in enumerate(distinct)}
        vectors = encode(teacher, distinct, batch_size=64)[[row_of[s] for s in data.sources]]
        if not np.isfinite(vectors).all():
            raise DataError("the teacher gave non-finite sentence vectors", data.paths[0])
        losses: dict[str, tuple[float, nn.Module]] = {}
        if options.mse_weight > 0:
            losses["mse"] = (options.mse_weight, SentenceMSE())
        if options.infonce_weight > 0:
            losses["infonce"] = (options.infonce_weight, InfoNCE(options.temperature))
        normalize = bool(student.encode_defaults.get("normalize", False))
        model = Distiller(teacher, student, losses, pooling=pooling, normalize=normalize)
        stream = ParallelStream(
            data, student.tokenizer, vectors, options.seq_length, context.seed,
            context.rank, context.world_size,
        )  # fmt: skip
        batches = BatchIterator(stream, context.batch_size, student.tokenizer.pad_id, collate_views)
        evaluate = sts_evaluator(student, context.dev) if context.dev is not None else None
        record = {"pairs": len(data), "files": [str(p) for p in data.paths], "pooling": pooling}
        return Plan(model, batches, evaluate, record)


def sts_evaluator(student: Model, path: str | Path) -> Callable[[nn.Module], dict[str, float]]:
    """Spearman and Pearson of the cosine of the student's embeddings with gold STS scores
    (an STS-B CSV or a scored pair TSV, as the ``simcse`` task reads them)."""
    from pretrainkit.tasks import build_task

    spec = build_task("simcse")
    data = spec.read(path)
    pairs = getattr(data, "pairs", None)
    if pairs is None or pairs.texts_b is None:
        raise DataError("expected scored sentence pairs to evaluate embeddings", path)
    gold = spec.gold(data)

    def evaluate(m: nn.Module) -> dict[str, float]:
        vectors = torch.from_numpy(student.encode(pairs.texts_a + pairs.texts_b))
        a, b = vectors[: len(pairs.texts_a)], vectors[len(pairs.texts_a) :]
        cosines = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
        return spec.metrics([float(x) for x in cosines], gold)

    return evaluate


def build_recipe(name: str, options: dict[str, Any] | None = None) -> Recipe:
    from pretrainkit.config.typed import from_dict

    cls = RECIPES.get(name)
    return cls(from_dict(cls.options_class, dict(options or {}), f"recipe {name}"))


def recipe_options(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe.options)
