"""The model: embedding ─► encoder ─► targets, with one typed output, save and load."""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from pretrainkit.config import EmbeddingConfig, EncoderConfig, ModelConfig, load_model_config
from pretrainkit.decoders import DECODERS
from pretrainkit.embeddings.embedding import build_embedding
from pretrainkit.encoders import ENCODERS
from pretrainkit.encoders.transformer import TransformerEncoder
from pretrainkit.errors import CheckpointError, ConfigError, check_tensor_keys, closest
from pretrainkit.fileio import atomic_directory, read_safetensors
from pretrainkit.targets import TARGETS, Target
from pretrainkit.whitening import WHITENING, Whitening, load_whitening

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
# Sentence-embedding defaults (pooling, normalize, max_length), e.g. from a sentence-transformers
# folder; written only when set.
ENCODE_DEFAULTS = "encode.json"
# HF tensors with no slot here (BertModel's unused pooler), kept so an export gives them back.
PASSTHROUGH = "hf_passthrough.safetensors"
# A mixed-precision plan (pretrainkit.samp): the folder holds a quantized model.
SAMP_PLAN = "samp_plan.json"
# The downstream task of a fine-tuned model (pretrainkit.tasks reads it).
TASK = "task.json"


@dataclass
class ModelOutput:
    """What ``Model.forward`` returns, always.

    Attributes:
        loss: sum of the targets' losses when labels were given, else None.
        logits: the first target's logits.
        hidden_states: what the targets read, ``[batch, seq, hidden]``: the last encoder layer,
            or the last decoder layer of a sequence-to-sequence model.
        metrics: scalar tensors per target (``mlm_loss``, ``nsp_accuracy``, ``accuracy`` ...).
        target_logits: every target's logits by target name.
        encoder_hidden_states: sequence-to-sequence models: the encoder's output (else None).
    """

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    hidden_states: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    target_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    encoder_hidden_states: torch.Tensor | None = None


def unpack_examples(
    hidden: torch.Tensor, unpack_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed rows ``[rows, s, h]`` → one row per example ``[n, longest, h]`` (zeros past each
    example's end) and that layout's padding mask ``[n, longest]``."""
    keep = unpack_index >= 0
    flat = hidden.reshape(-1, hidden.shape[-1])
    rows = flat[unpack_index.clamp(min=0)].masked_fill(~keep[..., None], 0.0)
    return rows, keep.long()


class Model(nn.Module):
    """The five slots: embedding ─► encoder ─► [tgt_embedding ─► decoder] ─► targets.

    Args:
        config: the validated config the model was built from (saved beside the weights).
        embedding: ids → ``[b, s, h]``.
        encoder: ``[b, s, h]`` → ``[b, s, h]``.
        targets: named heads; their losses are summed. They read the decoder's output when there
            is a decoder, else the encoder's.
        tgt_embedding: sequence-to-sequence models: decoder input ids → ``[b, t, h]``.
        decoder: sequence-to-sequence models: ``[b, t, h]`` + encoder output → ``[b, t, h]``.
    """

    def __init__(
        self,
        config: ModelConfig,
        embedding: nn.Module,
        encoder: nn.Module,
        targets: dict[str, Target],
        tgt_embedding: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        if (tgt_embedding is None) != (decoder is None):
            raise ValueError("tgt_embedding and decoder come together")
        self.config = config
        self.embedding = embedding
        self.encoder = encoder
        self.tgt_embedding = tgt_embedding
        self.decoder = decoder
        self.targets = nn.ModuleDict(targets)
        self.tokenizer: Any = None  # set by the caller; saved with the model when present
        # Defaults of `encode` recorded with the model (keys: pooling, normalize, max_length).
        self.encode_defaults: dict[str, Any] = {}
        # Converted models: HF tensors pretrainkit does not use, saved along (PASSTHROUGH).
        self.hf_passthrough: dict[str, torch.Tensor] = {}
        # The downstream task a fine-tuned model solves (name, options, label set), as
        # pretrainkit.tasks records it; saved as task.json and read back by every command.
        self.task_record: dict[str, Any] | None = None
        # A fitted sentence-vector whitening (pretrainkit.whitening) that `encode` applies;
        # saved as whitening.safetensors.
        self.whitening: Whitening | None = None

    def target_modules(self) -> dict[str, Target]:
        return {name: cast(Target, target) for name, target in self.targets.items()}

    @property
    def shares_word_embedding(self) -> bool:
        """The target embedding's word table is the source one (seq2seq models)."""
        return self.decoder is not None and self.config.share_embedding

    def _output_word_table(self) -> tuple[str, Any]:
        # Heads predict the sequence the targets read: the decoder's, when there is one.
        if self.tgt_embedding is not None and not self.shares_word_embedding:
            tgt: Any = self.tgt_embedding
            return "tgt_embedding", tgt
        return "embedding", self.embedding

    def tied_parameters(self) -> dict[str, str]:
        """Alias name → source name for every shared weight (one copy on disk)."""
        table, _ = self._output_word_table()
        aliases = {
            f"targets.{name}.{target.tie_word_embedding}.weight": f"{table}.parts.word.weight"
            for name, target in self.target_modules().items()
            if target.tie_word_embedding
        }
        if self.shares_word_embedding:
            aliases["tgt_embedding.parts.word.weight"] = "embedding.parts.word.weight"
        return aliases

    def tie_weights(self) -> None:
        """Share word tables: the target embedding's with the source one (``share_embedding``)
        and every target that declares ``tie_word_embedding`` with the table it predicts."""
        if self.shares_word_embedding:
            tgt: Any = self.tgt_embedding
            tgt.parts["word"].weight = self.embedding.word_weight
        _, embedding = self._output_word_table()
        for target in self.target_modules().values():
            if target.tie_word_embedding:
                getattr(target, target.tie_word_embedding).weight = embedding.word_weight

    def decoder_inputs(self, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's input for target ``labels`` ``[b, t]``: shifted right behind the start
        id, ignored positions (-100) replaced by the pad id (HF's ``shift_tokens_right``)."""
        decoder = self.config.decoder
        if decoder is None:
            raise ConfigError("decoder_inputs: this model has no decoder")
        start = torch.full_like(labels[:, :1], decoder.start_id)
        shifted = torch.cat((start, labels[:, :-1]), dim=1)
        return shifted.masked_fill(shifted == -100, decoder.pad_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pair_labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        example_ids: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        unpack_index: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Run the slots; targets compute losses for the labels they are given.

        Sequence-to-sequence models also take ``decoder_input_ids`` ``[b, t]`` (built from
        ``labels`` with ``decoder_inputs`` when omitted) and their padding mask; their targets
        read the decoder's output and ``labels`` are the target sequence (no shift).
        Image models (a ``patch`` embedding part) take ``pixel_values`` ``[b, c, H, W]`` instead
        of ``input_ids``; speech models (a ``speech`` part) ``input_features``
        ``[b, frames, num_mel_bins]`` with a frame-level ``attention_mask`` ``[b, frames]``, which
        becomes the mask of the shorter encoder sequence (``encoder_mask``).
        Per-row patterns (objectives ``prefixlm`` and ``sft``) for the encoder: ``position_ids``
        ``[b, s]`` (packed examples restart at 0), ``example_ids`` ``[b, s]`` (tokens attend only
        within their packed example) and ``prefix_lengths`` ``[b]`` (a bidirectional prefix, then
        causal); see ``pretrainkit.layers.attention.attention_pattern``.
        Masked-patch pre-training (objective ``masked_patch``): ``patch_mask`` ``[b, patches]``
        marks the patches the ``patch`` embedding replaces by its mask vector.
        Packed batches (``data.batching.collate_packed``, a task's ``--pack``): ``unpack_index``
        ``[n, longest]`` gathers the encoder's packed output back into one row per example
        before the targets, whose labels are per example.
        """
        given_inputs = [x for x in (input_ids, pixel_values, input_features) if x is not None]
        if len(given_inputs) != 1:
            raise ValueError(
                "give exactly one of input_ids and pixel_values (images) or input_features (speech)"
            )
        inputs = given_inputs[0]
        if patch_mask is not None:  # masked-patch pre-training: masked patches → the mask vector
            embedded = self.embedding(inputs, token_type_ids, patch_mask=patch_mask)
            hidden = self.encoder(embedded, self.encoder_mask(attention_mask))
        else:
            hidden = self.encoder_states(
                inputs, attention_mask, token_type_ids, position_ids, example_ids, prefix_lengths
            )
        memory = None
        attention_mask = self.encoder_mask(attention_mask)  # speech: of the subsampled frames
        if unpack_index is not None:
            if example_ids is None or self.decoder is not None:
                raise ValueError("unpack_index needs example_ids and a model without a decoder")
            hidden, attention_mask = unpack_examples(hidden, unpack_index)
        target_mask = attention_mask
        if self.decoder is not None and self.tgt_embedding is not None:
            if decoder_input_ids is None:
                if labels is None:
                    raise ValueError("a seq2seq model needs decoder_input_ids or labels")
                decoder_input_ids = self.decoder_inputs(labels)
            memory = hidden
            target_mask = decoder_attention_mask
            hidden = self.decoder(
                self.tgt_embedding(decoder_input_ids),
                decoder_attention_mask,
                memory,
                attention_mask,
            )
        elif decoder_input_ids is not None or decoder_attention_mask is not None:
            raise ValueError("decoder_input_ids given, but this model has no decoder")
        # Span targets read both boundaries as one [b, 2] tensor: the Target API has one key.
        spans = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError("span labels need both start_positions and end_positions")
        if start_positions is not None and end_positions is not None:
            spans = torch.stack([start_positions, end_positions], dim=-1)
        given = {"labels": labels, "pair_labels": pair_labels, "span_positions": spans}
        output = self.run_targets(hidden, target_mask, given)
        output.encoder_hidden_states = memory
        return output

    def run_targets(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        given: dict[str, torch.Tensor | None],
    ) -> ModelOutput:
        """The targets on ``hidden`` ``[b, s, h]``; each reads its labels from ``given`` (by its
        ``label_key``) and their losses are summed. ``forward`` ends here; distillation calls it
        on hidden states it computed itself (with every layer's output kept)."""
        loss = None
        metrics: dict[str, torch.Tensor] = {}
        logits: dict[str, torch.Tensor] = {}
        for name, target in self.target_modules().items():
            out = target(hidden, mask, given.get(target.label_key))
            logits[name] = out.logits
            metrics.update(out.metrics)
            if out.loss is not None:
                loss = out.loss if loss is None else loss + out.loss
        first = next(iter(logits.values()), None)
        return ModelOutput(loss, first, hidden, metrics, logits)

    def encoder_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        example_ids: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The encoder's output ``[b, s, h]`` (the embedding and encoder slots only)."""
        attention_mask = self.encoder_mask(attention_mask)
        if position_ids is None and example_ids is None and prefix_lengths is None:
            return self.encoder(self.embedding(input_ids, token_type_ids), attention_mask)
        if not isinstance(self.encoder, TransformerEncoder):
            raise ConfigError(
                f"position_ids / example_ids / prefix_lengths need a transformer encoder, not "
                f"{type(self.encoder).__name__}"
            )
        embedded = self.embedding(input_ids, token_type_ids, position_ids)
        return self.encoder(
            embedded,
            attention_mask,
            positions=position_ids,
            example_ids=example_ids,
            prefix_lengths=prefix_lengths,
        )

    def layer_outputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every encoder layer's output ``[b, s, h]`` in order; the last equals ``hidden_states``."""
        layer_outputs = getattr(self.encoder, "layer_outputs", None)
        if layer_outputs is None:
            raise ConfigError(f"{type(self.encoder).__name__} cannot return every layer's output")
        mask = self.encoder_mask(attention_mask)
        return layer_outputs(self.embedding(input_ids, token_type_ids), mask)

    def encoder_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder's padding mask for the input's ``attention_mask``: the same, unless the
        embedding shortens the input (speech frames ``[b, frames]`` → ``[b, frames']``)."""
        shorten = getattr(self.embedding, "output_mask", None)
        return attention_mask if shorten is None else shorten(attention_mask)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        precision: str = "fp32",
        whiten: bool = True,
    ) -> np.ndarray:
        """Sentence embeddings ``[len(texts), hidden]`` (float32), like sentence-transformers;
        ``[len(texts), k]`` when the model has a whitening (``self.whitening``).

        Runs in eval mode without gradients through ``self.tokenizer``, in batches of texts of
        similar length (longest first). Options left as None take the pooling the model's
        whitening was fitted for, else the model's ``encode_defaults`` (recorded when converting
        a sentence-transformers folder), else mean pooling, no normalisation and the position
        table's capacity.

        Args:
            texts: the sentences.
            batch_size: sentences per forward pass.
            pooling: ``cls`` (first token), ``mean``, ``max`` (over real tokens) or
                ``first-last-avg`` (mean over tokens of the average of the first and the last
                transformer layer's outputs, as in BERT-whitening).
            normalize: scale every embedding to unit L2 norm.
            max_length: longest input in tokens, special tokens included; longer texts are cut.
            precision: ``fp32``; ``bf16`` (autocast, fastest on a CPU with bf16 instructions);
                ``fp16`` on a GPU only (a ConfigError on CPU).
            whiten: apply ``self.whitening`` when there is one (to the pooled vectors, before
                normalising); False gives the plain pooled vectors.
        """
        from pretrainkit.encoding import encode

        return encode(self, texts, batch_size, pooling, normalize, max_length, precision, whiten)

    # -- persistence ---------------------------------------------------------------------
    def save(
        self,
        directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write config.yaml, model.safetensors and the tokenizer into ``directory`` atomically.

        Args:
            directory: the model folder; it must not exist yet, or be empty.
            state_dict: the full weights to write instead of ``self.state_dict()``, for a model
                whose parameters are sharded over processes (gathered by the distributed
                engine).
            overwrite: replace an existing non-empty ``directory`` (otherwise an
                ``OutputExistsError``).
        """
        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            self.config.save(tmp / CONFIG)
            aliases = self.tied_parameters()
            state = {
                k: v.detach().contiguous().cpu()
                for k, v in (self.state_dict() if state_dict is None else state_dict).items()
                if k not in aliases
            }
            save_file(state, str(tmp / WEIGHTS), metadata={"format": "pretrainkit"})
            if self.tokenizer is not None:
                self.tokenizer.save(tmp / TOKENIZER)
            if self.encode_defaults:
                (tmp / ENCODE_DEFAULTS).write_text(json.dumps(self.encode_defaults, indent=2))
            if self.whitening is not None:
                self.whitening.save(tmp / WHITENING)
            if self.task_record is not None:
                (tmp / TASK).write_text(json.dumps(self.task_record, indent=2) + "\n")
            if self.hf_passthrough:
                passthrough = {k: v.contiguous() for k, v in self.hf_passthrough.items()}
                save_file(passthrough, str(tmp / PASSTHROUGH), metadata={"format": "pt"})
            plan = getattr(self, "samp_plan", None)
            if plan is not None:  # quantized: the plan writes how to rebuild it
                plan.write_files(self, tmp)
        return directory

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters an optimizer updates: those that require gradients."""
        return (p for p in self.parameters() if p.requires_grad)

    def load_weights(self, directory: str | os.PathLike) -> None:
        """Load ``model.safetensors`` strictly; mismatches are listed by key."""
        path = Path(directory) / WEIGHTS if Path(directory).is_dir() else Path(directory)
        if not path.is_file():
            if (path.parent / "sharded" / "index.json").is_file():  # a sharded checkpoint
                raise CheckpointError(
                    f"{path.parent}: a sharded checkpoint (every process's part in sharded/), "
                    f"not a model folder; `pretrainkit convert --from-checkpoint {path.parent} "
                    "--out DIR` writes one"
                )
            raise CheckpointError(f"{path}: no weights file")
        state = read_safetensors(path)
        load_state_strict(self, state, str(path))


def load_state_strict(model: Model, state: dict[str, torch.Tensor], source: str) -> None:
    aliases = model.tied_parameters()
    expected = {k: v for k, v in model.state_dict().items() if k not in aliases}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    check_tensor_keys(f"{source} does not match its config", missing, unexpected, wrong)
    model.load_state_dict(state, strict=False)  # aliases are checked above, then re-tied
    model.tie_weights()


# -- building ------------------------------------------------------------------------------


def _build_target(
    name: str, options: dict[str, Any], provided: dict[str, Any], where: str
) -> Target:
    cls = TARGETS.get(name)
    params = inspect.signature(cls.__init__).parameters
    settable = [p for p in params if p != "self" and p not in provided]
    for key in options:
        if key not in settable:
            raise ConfigError(
                f"{where}: unknown option {key!r} for target {name!r}{closest(key, settable)}; "
                f"valid options: {', '.join(settable) or 'none'}"
            )
    kwargs = {k: v for k, v in provided.items() if k in params}
    required = [
        p
        for p, spec in params.items()
        if p != "self"
        and spec.default is inspect.Parameter.empty
        and p not in kwargs
        and p not in options
    ]
    if required:
        raise ConfigError(f"{where}: target {name!r} needs option(s): {', '.join(required)}")
    try:
        return cls(**kwargs, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: target {name!r}: {error}") from None


def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    # BERT's initialisation: N(0, 0.02) weights, zero biases, unit norms.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif (
        hasattr(module, "weight")
        and isinstance(module.weight, nn.Parameter)
        and module.weight.dim() == 2
        and not list(module.children())
    ):
        nn.init.normal_(module.weight, std=std)  # embedding parts


def _t5_init(model: Model, config: ModelConfig) -> None:
    """T5's initialisation (Mesh TensorFlow's, as transformers' ``T5PreTrainedModel`` has it):
    word tables and an untied LM head N(0, 1); attention query N(0, (hidden * head_dim)^-0.5),
    key / value N(0, hidden^-0.5), output N(0, (heads * head_dim)^-0.5); feed-forward input
    N(0, hidden^-0.5), output N(0, ffn^-0.5); relative position biases N(0, hidden^-0.5)."""
    hidden = config.hidden_size
    stacks = {"encoder": config.encoder, "decoder": config.decoder}
    for name, param in model.named_parameters():
        if param.dim() < 2:
            continue  # norms stay at one, biases (none in T5) at zero
        slot = name.split(".", 1)[0]
        stack = stacks.get(slot)
        std = None
        if name.endswith("parts.word.weight") or slot == "targets":
            std = 1.0
        elif isinstance(stack, EncoderConfig):  # a transformer stack (decoders subclass it)
            heads = stack.num_heads
            head_dim = stack.head_dim or hidden // heads
            if ".query." in name:
                std = (hidden * head_dim) ** -0.5
            elif ".key." in name or ".value." in name:
                std = hidden**-0.5
            elif ".output." in name:
                std = (heads * head_dim) ** -0.5
            elif ".feed_forward." in name:
                std = param.shape[1] ** -0.5  # fan-in: hidden for up / gate, ffn for down
            elif "relative_bias" in name:
                std = hidden**-0.5
        if std is not None:
            with torch.no_grad():
                param.normal_(0.0, std)


def build_model(
    spec: str | os.PathLike | ModelConfig | dict, overrides: dict[str, Any] | None = None
) -> Model:
    """Build a freshly initialised model from a preset name, YAML path, dict or config."""
    config = load_model_config(spec if not isinstance(spec, os.PathLike) else str(spec), overrides)
    emb = config.embedding
    embedding = _build_embedding(config, emb)
    encoder_kwargs = asdict(config.encoder)
    encoder = ENCODERS.get(encoder_kwargs.pop("name"))(
        hidden_size=config.hidden_size, **encoder_kwargs
    )
    tgt_embedding = decoder = None
    if config.tgt_embedding is not None and config.decoder is not None:
        tgt_embedding = _build_embedding(config, config.tgt_embedding)
        decoder_kwargs = asdict(config.decoder)
        for key in ("start_id", "pad_id"):  # used by Model.decoder_inputs, not the stack
            decoder_kwargs.pop(key)
        decoder = DECODERS.get(decoder_kwargs.pop("name"))(
            hidden_size=config.hidden_size, **decoder_kwargs
        )
        if not config.share_embedding:
            emb = config.tgt_embedding  # heads tie to the table of the sequence they predict
    embedding_size = emb.factorized_size or config.hidden_size
    provided = {
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "embedding_size": embedding_size,
        # Pixel values per image patch, for heads that predict pixels (masked_patch).
        "patch_pixels": config.embedding.channels * (config.embedding.patch_size or 0) ** 2,
    }
    targets: dict[str, Target] = {}
    for i, entry in enumerate(config.targets):
        if entry.name in targets:
            raise ConfigError(f"targets[{i}]: target {entry.name!r} appears twice")
        targets[entry.name] = _build_target(entry.name, entry.options, provided, f"targets[{i}]")
    for name, target in targets.items():
        tied = target.tie_word_embedding
        if tied and getattr(target, tied).weight.shape[1] != embedding_size:
            raise ConfigError(
                f"target {name!r} cannot tie to a word embedding of size "
                f"{embedding_size}; set tied: false"
            )
    model = Model(config, embedding, encoder, targets, tgt_embedding, decoder)
    model.apply(_init_weights)
    if config.init == "t5":
        _t5_init(model, config)
    model.tie_weights()
    return model


def _build_embedding(config: ModelConfig, emb: EmbeddingConfig) -> nn.Module:
    return build_embedding(
        config.vocab_size,
        config.hidden_size,
        emb.parts,
        emb.max_positions,
        emb.num_segments,
        emb.factorized_size,
        emb.layer_norm,
        emb.norm,
        emb.norm_eps,
        emb.dropout,
        emb.position_offset,
        emb.scale_word,
        emb.image_size,
        emb.patch_size,
        emb.channels,
        emb.num_mel_bins,
        emb.conv_channels,
        tuple(emb.conv_kernel_sizes),
        mask_patches=emb.mask_patches,
    )


def model_folder(directory: str | os.PathLike) -> Path:
    """The model folder ``directory`` names: itself, or ``RUN/model`` for a training run
    folder (said in the log); a CheckpointError when it is neither."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file() and (directory / "model" / CONFIG).is_file():
        # A training run folder: its final model is in model/.
        log.info("%s is a run folder; loading its model from %s", directory, directory / "model")
        directory = directory / "model"
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model folder")
    if not (directory / CONFIG).is_file():
        raise CheckpointError(
            f"{directory}: not a model folder (no {CONFIG}); give a folder written by "
            "pretrain/finetune (RUN/model), convert --from-hf or Model.save"
        )
    return directory


def load(
    directory: str | os.PathLike,
    prepare: Callable[[Model, Path], Model] | None = None,
) -> Model:
    """Load a model folder written by ``Model.save`` (config, weights and tokenizer).

    ``prepare`` turns the model built from the config into the one the weights belong to
    before they are loaded (a quantized folder's layers); ``pretrainkit.load`` passes it for
    the folders that need it, so this module knows nothing of them.
    """
    directory = model_folder(directory)
    model = build_model(ModelConfig.load(directory / CONFIG))
    if prepare is not None:
        model = prepare(model, directory)
    elif (directory / SAMP_PLAN).is_file():
        raise CheckpointError(
            f"{directory}: a quantized folder ({SAMP_PLAN}); load it with pretrainkit.load"
        )
    model.load_weights(directory)
    if (directory / TOKENIZER).exists():
        from pretrainkit.tokenization import load_tokenizer

        model.tokenizer = load_tokenizer(directory / TOKENIZER)
    if (directory / PASSTHROUGH).is_file():
        model.hf_passthrough = read_safetensors(directory / PASSTHROUGH)
    if (directory / WHITENING).is_file():
        model.whitening = load_whitening(directory / WHITENING, model.config.hidden_size)
    if (directory / TASK).is_file():
        model.task_record = _read_json_object(directory / TASK)
    if (directory / ENCODE_DEFAULTS).is_file():
        try:
            model.encode_defaults = dict(json.loads((directory / ENCODE_DEFAULTS).read_text()))
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{directory / ENCODE_DEFAULTS}: {error}") from None
    return model


def _read_json_object(path: Path) -> dict[str, Any]:
    from pretrainkit.fileio import read_json_object

    return read_json_object(path)
