"""What a model family is to the converter: config translators plus declarative key maps.

A key map is a tuple of ``(ours, hf)`` name pairs, or ``(ours, hf, Transform)`` where the HF
tensor is stored differently (GPT-2's transposed Conv1D weights, its fused query/key/value
``c_attn``, BART's ``[1, vocab]`` logits bias); ``{i}`` in both names stands for the encoder
layer index and ``{j}`` for the decoder's, expanded over the layers the pretrainkit model
actually stores (one for ALBERT's shared block). The converter in
``convert.hf`` is the only code that interprets them, so adding a family means adding one file of
tables, not another script.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pretrainkit.config import ModelConfig, TargetConfig
from pretrainkit.errors import CheckpointError
from pretrainkit.registry import Registry


@dataclass(frozen=True)
class Transform:
    """How one of our tensors sits inside a HF tensor; the identity by default.

    Import takes part ``part`` of ``parts`` equal slices of the HF tensor along ``dim`` (HF
    layout), then transposes it; export transposes back and concatenates the parts of one HF
    name in ``part`` order. Both are pure copies, so a round trip is bit for bit.

    Attributes:
        transpose: the HF tensor is the transpose of ours (Conv1D stores ``[in, out]``).
        part: which slice of the HF tensor is ours.
        parts: how many equal slices the HF tensor is made of (1: not fused).
        dim: the HF dimension the slices are stacked along.
        unsqueeze: the HF tensor has an extra leading dimension of size 1 (BART's
            ``final_logits_bias`` is ``[1, vocab]``, our bias ``[vocab]``).
    """

    transpose: bool = False
    part: int = 0
    parts: int = 1
    dim: int = 0
    unsqueeze: bool = False

    def from_hf(self, tensor: torch.Tensor) -> torch.Tensor:
        """Our tensor out of the HF one (whose shape was checked with ``hf_shape``)."""
        if self.unsqueeze:
            tensor = tensor[0]
        if self.parts > 1:
            tensor = tensor.chunk(self.parts, dim=self.dim)[self.part]
        return tensor.t() if self.transpose else tensor

    def to_hf(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The HF tensor from our tensors for every part of it, in ``part`` order."""
        laid = [t.t() if self.transpose else t for t in parts]
        out = torch.cat(laid, dim=self.dim) if self.parts > 1 else laid[0]
        return out[None] if self.unsqueeze else out

    def hf_shape(self, ours: tuple[int, ...]) -> tuple[int, ...]:
        """The shape the HF tensor must have, given the shape of our part."""
        shape = list(reversed(ours)) if self.transpose else list(ours)
        shape[self.dim] *= self.parts
        return (1, *shape) if self.unsqueeze else tuple(shape)


IDENTITY = Transform()
KeyPair = tuple[str, str] | tuple[str, str, Transform]
KeyMap = tuple[KeyPair, ...]
Mapping = tuple[str, str, Transform]


def params(*modules: tuple[str, str], kinds: tuple[str, ...] = ("weight", "bias")) -> KeyMap:
    """Key pairs for modules that hold the same parameters on both sides (Linear, LayerNorm)."""
    return tuple((f"{ours}.{kind}", f"{hf}.{kind}") for ours, hf in modules for kind in kinds)


def conv1d(*modules: tuple[str, str]) -> KeyMap:
    """Key pairs for our Linear layers stored as HF Conv1D (weight transposed, bias as is)."""
    return tuple(
        pair
        for ours, hf in modules
        for pair in (
            (f"{ours}.weight", f"{hf}.weight", Transform(transpose=True)),
            (f"{ours}.bias", f"{hf}.bias"),
        )
    )


def fused_conv1d(ours: tuple[str, ...], hf: str) -> KeyMap:
    """Our separate Linear layers stored as one HF Conv1D whose outputs are concatenated.

    GPT-2's ``c_attn`` is ``[h, 3h]`` (query, key, value side by side on the output dimension),
    its bias ``[3h]``.
    """
    n = len(ours)
    return tuple(
        pair
        for part, name in enumerate(ours)
        for pair in (
            (f"{name}.weight", f"{hf}.weight", Transform(True, part, n, dim=1)),
            (f"{name}.bias", f"{hf}.bias", Transform(False, part, n, dim=0)),
        )
    )


def expand(
    keys: KeyMap, num_layers: int, prefix: str = "", num_decoder_layers: int = 0
) -> list[Mapping]:
    """Concrete ``(ours, hf, transform)``: ``{i}`` (encoder layers) and ``{j}`` (decoder layers)
    expanded, ``prefix`` before every HF name."""
    out = []
    for pair in keys:
        ours, hf = pair[0], pair[1]
        transform = pair[2] if len(pair) == 3 else IDENTITY
        field, count = ("{j}", num_decoder_layers) if "{j}" in ours + hf else ("{i}", num_layers)
        indices = [str(i) for i in range(count)] if field in ours + hf else [field]
        for i in indices:
            out.append((ours.replace(field, i), prefix + hf.replace(field, i), transform))
    return out


@dataclass(frozen=True)
class Head:
    """One HF architecture of a family and the pretrainkit targets it corresponds to.

    Attributes:
        architecture: the HF class name (``BertForPreTraining``).
        targets: our target names, in order (``("mlm", "nsp")``); empty for the bare encoder.
        prefix: where the encoder body sits inside this architecture (``"bert."``).
        keys: the head's own tensors, ``(ours, hf)`` with full HF names.
        tied: ``(hf alias, hf source)``: tensors HF shares with another one (the decoder and the
            word embedding). Older checkpoints store them; they are checked equal on import and
            never written (HF re-ties them on load).
        passthrough: HF tensors with no slot in pretrainkit (BertModel's unused pooler); they
            are kept beside the model (``hf_passthrough.safetensors``) and written back on
            export, so nothing is dropped. They may be absent.
        optional: HF tensors that older checkpoints may lack and HF then computes itself (BART's
            zero ``final_logits_bias``, PEGASUS' sinusoidal tables); when absent, our freshly
            built model's values (the same) are kept. Always exported.
    """

    architecture: str
    targets: tuple[str, ...]
    prefix: str = ""
    keys: KeyMap = ()
    tied: tuple[tuple[str, str], ...] = ()
    passthrough: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """A HF ``model_type`` and how it maps onto the five slots.

    Attributes:
        model_type: HF's ``model_type`` (``bert``).
        config_from_hf: HF config.json dict → our model config dict without targets.
        config_to_hf: our config → HF config.json keys for the body (raises CheckpointError when
            the model cannot be expressed in this family).
        target_from_hf: (our target name, HF config) → that target's options.
        target_to_hf: our target entry → HF config keys it implies (labels ...), checking that
            its options are ones HF's head computes.
        body: the body's key map, HF names relative to the head's ``prefix``; a function of our
            config where the tensors depend on it (T5's dense or gated feed-forward).
        heads: supported architectures.
        unsupported: architectures recognised but not converted yet (a clear error, no drop).
        ignored: HF buffers that carry no weights (``embeddings.position_ids``), relative to
            the prefix; consumed without a slot.
        tokenizer_class: what HF's config/tokenizer files call the tokenizer on export.
        renames: ``(pattern, replacement)`` regular expressions applied in order to every HF
            name on import: older checkpoint layouts (transformers 4's ViT names) mapped onto
            today's, as transformers itself does on load. Export writes today's names.
        complete_config: HF config.json dict → the same with what transformers derives from it
            on load filled in (T5's ``scale_decoder_outputs`` from an older
            ``tie_word_embeddings``), before the tensors are looked at.
        pad_token_id: HF's ``pad_token_id`` on export when neither ``config_to_hf`` nor the
            tokenizer gives one (BERT's 0); None writes none (GPT-2, LLaMA: HF would make that
            row of the embedding padding).
    """

    model_type: str
    config_from_hf: Callable[[dict[str, Any]], dict[str, Any]]
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    target_from_hf: Callable[[str, dict[str, Any]], dict[str, Any]]
    target_to_hf: Callable[[TargetConfig, ModelConfig], dict[str, Any]]
    body: KeyMap | Callable[[ModelConfig], KeyMap]
    heads: tuple[Head, ...]
    unsupported: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    tokenizer_class: str = "BertTokenizer"
    renames: tuple[tuple[str, str], ...] = ()
    complete_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    pad_token_id: int | None = None

    def rename(self, name: str) -> str:
        for pattern, replacement in self.renames:
            name = re.sub(pattern, replacement, name)
        return name

    def body_keys(self, config: ModelConfig) -> KeyMap:
        return self.body(config) if callable(self.body) else self.body

    def head_for_architecture(self, architecture: str) -> Head:
        for head in self.heads:
            if head.architecture == architecture:
                return head
        if architecture in self.unsupported:
            raise CheckpointError(
                f"{architecture} is not supported yet (multiple-choice and other heads come "
                f"later); supported {self.model_type} architectures: "
                f"{', '.join(h.architecture for h in self.heads)}"
            )
        raise CheckpointError(
            f"unknown {self.model_type} architecture {architecture!r}; supported: "
            f"{', '.join(h.architecture for h in self.heads)}"
        )

    def head_for_targets(self, targets: tuple[str, ...]) -> Head:
        for head in self.heads:
            if head.targets == targets:
                return head
        known = "; ".join(f"{list(h.targets)} → {h.architecture}" for h in self.heads)
        raise CheckpointError(
            f"no {self.model_type} architecture has the targets {list(targets)}; "
            f"exportable: {known}"
        )


FAMILIES: Registry[Family] = Registry("HF model_type")


def register(family: Family) -> Family:
    return FAMILIES.register(family.model_type)(family)


def need(condition: bool, what: str) -> None:
    """Raise CheckpointError(``what``) unless ``condition``: the translators' one check."""
    if not condition:
        raise CheckpointError(what)
