"""Student initialisation: a smaller model built from a teacher-like folder (TinyBERT, DistilBERT,
the multi-stage cross-lingual distillation seed paper).

- take K of the source's layers, the bottom ones or spread uniformly (every other layer);
- parameter recurrence: G distinct blocks applied K / G times each, initialised from G of the
  chosen layers (``EncoderConfig.layer_groups``);
- a factorised (bottleneck) word embedding of width F, initialised from the source's tables by
  their top-F singular directions when the vocabulary is kept;
- a new vocabulary (another tokenizer): tokens the source's vocabulary also has keep their
  vectors, the others are drawn at the scale of the source's table; every other tensor comes
  from the source;
- the word embeddings frozen (LightMBERT).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch

from pretrainkit.distill.options import StudentOptions
from pretrainkit.errors import ConfigError
from pretrainkit.model import Model, build_model

log = logging.getLogger(__name__)


def chosen_layers(total: int, keep: int, selection: str) -> list[int]:
    """0-based indexes of the ``keep`` layers taken out of ``total``."""
    if not 1 <= keep <= total:
        raise ConfigError(f"student_layers: {keep} is out of range: the folder has {total} layers")
    if selection == "bottom":
        return list(range(keep))
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def make_student(source: Model, options: StudentOptions) -> Model:
    """A new model initialised from ``source`` as ``options`` say (``source`` is unchanged)."""
    config = source.config
    if config.decoder is not None:
        raise ConfigError("make_student: sequence-to-sequence students are not supported yet")
    total = config.encoder.num_layers
    keep = options.student_layers or total
    chosen = chosen_layers(total, keep, options.layer_selection)
    groups = options.layer_groups
    if groups is None and keep == total:  # the folder's own recurrence, kept as it is
        groups = 1 if config.encoder.share_layers else config.encoder.layer_groups
    if groups is not None and (groups > keep or keep % groups):
        raise ConfigError(
            f"layer_groups: {groups} must divide the student's {keep} layers (each group is "
            "applied the same number of times)"
        )
    blocks = [chosen[g * keep // groups] for g in range(groups)] if groups else chosen
    tokenizer = source.tokenizer
    if options.student_tokenizer is not None:
        from pretrainkit.tokenization import load_tokenizer

        tokenizer = load_tokenizer(options.student_tokenizer)
    data = config.to_dict()
    data["vocab_size"] = tokenizer.vocab_size if tokenizer is not None else config.vocab_size
    data["encoder"] = {**data["encoder"], "num_layers": keep, "layer_groups": groups}
    data["encoder"]["share_layers"] = False
    factorized = options.factorized_size or config.embedding.factorized_size
    data["embedding"] = {**data["embedding"], "factorized_size": factorized}
    student = build_model(data)
    new_vocab = data["vocab_size"] != config.vocab_size or options.student_tokenizer is not None
    _copy_weights(source, student, blocks, new_vocab)
    if new_vocab:
        _word_table(source, student, tokenizer)
    student.tie_weights()
    student.tokenizer = tokenizer
    student.encode_defaults = dict(source.encode_defaults)
    if source.whitening is not None:  # fitted to the folder's vectors, not the student's
        log.info("the folder's whitening is not carried to the student; fit one for it")
    student.task_record = source.task_record
    if options.freeze_word_embeddings:
        _table(student).requires_grad_(False)
    return student


def _source_block(source: Model, application: int) -> int:
    """The stored block index the source applies as layer ``application`` (0-based)."""
    stored = len(source.encoder.layers)  # type: ignore[arg-type]
    return application * stored // source.config.encoder.num_layers


@torch.no_grad()
def _copy_weights(source: Model, student: Model, blocks: list[int], new_vocab: bool) -> None:
    """Fill ``student`` from ``source``: block j from source layer ``blocks[j]``, the embedding
    (projected into a bottleneck when widths differ), and every other tensor of equal shape."""
    theirs = source.state_dict()
    ours = student.state_dict()
    fresh: list[str] = []
    factorised = student.config.embedding.factorized_size != source.config.embedding.factorized_size
    basis = _embedding_basis(source, student) if factorised else None
    for key, tensor in ours.items():
        origin = key
        if key.startswith("encoder.layers."):
            index, rest = key[len("encoder.layers.") :].split(".", 1)
            origin = f"encoder.layers.{_source_block(source, blocks[int(index)])}.{rest}"
        if new_vocab and key == "embedding.parts.word.weight":
            fresh.append(key)
            continue
        if basis is not None and key.startswith("embedding."):
            value = _factorised(key, theirs, basis)
            if value is None:
                fresh.append(key)
            else:
                tensor.copy_(value)
            continue
        if origin in theirs and theirs[origin].shape == tensor.shape:
            tensor.copy_(theirs[origin])
        else:
            fresh.append(key)
    if fresh:
        log.info("student tensors not taken from the folder (freshly initialised): %s", fresh)


def _table(model: Model) -> torch.Tensor:
    """The word table (an ``Embedding`` slot's ``word_weight``)."""
    return cast(torch.Tensor, model.embedding.word_weight)


@torch.no_grad()
def _word_table(source: Model, student: Model, tokenizer: Any) -> None:
    """The student's table for another vocabulary: rows of tokens the source knows are copied
    (projected into a bottleneck when there is one); the rest are drawn with the source table's
    mean and spread, so that words weigh against positions as they did in the source (the
    usual 0.02 init would leave a copied stack seeing positions only)."""
    theirs = _table(source).detach().float()  # [vocab, h]
    table = _table(student)
    if table.shape[1] != theirs.shape[1]:  # a bottleneck: the source rows in its basis
        theirs = theirs @ _embedding_basis(source, student)
    mean, spread = theirs.mean(0), theirs.std(0)
    table.copy_(mean + spread * torch.randn(table.shape))
    shared = 0
    known = source.tokenizer
    if known is not None and tokenizer is not None:
        for index in range(tokenizer.vocab_size):
            token = tokenizer.id_to_token(index)
            origin = known.token_to_id(token) if token is not None else None
            if origin is not None and origin < theirs.shape[0]:
                table[index] = theirs[origin]
                shared += 1
    log.info("new vocabulary: %d of %d tokens keep the folder's vectors", shared, table.shape[0])


def _embedding_basis(source: Model, student: Model) -> torch.Tensor:
    """The top singular directions ``[h, F]`` of the source's word table (its rows' space)."""
    size = student.config.embedding.factorized_size
    if source.config.embedding.factorized_size is not None:
        raise ConfigError("factorized_size: the student folder is already factorised")
    assert size is not None
    if size >= source.config.hidden_size:
        raise ConfigError(
            f"factorized_size: {size} must be smaller than the hidden size "
            f"{source.config.hidden_size} (a bottleneck)"
        )
    table = _table(source).detach().float()  # [vocab, h]
    _, _, right = torch.linalg.svd(table - table.mean(0), full_matrices=False)  # [h, h]
    return right[:size].T.contiguous()  # [h, F]


def _factorised(
    key: str, theirs: dict[str, torch.Tensor], basis: torch.Tensor
) -> torch.Tensor | None:
    """A bottleneck embedding tensor from the source's full-width one: tables projected onto
    the basis, the up-projection its transpose (so up(table·B) ≈ table); norms start fresh."""
    if key.startswith("embedding.parts.") and key.endswith(".weight") and key in theirs:
        return theirs[key].float() @ basis  # [n, F]
    if key == "embedding.project.weight":
        return basis  # nn.Linear(F, h).weight is [h, F]
    if key == "embedding.project.bias":
        return torch.zeros(basis.shape[0])
    return None
