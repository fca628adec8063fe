"""The one converter between HF model folders and pretrainkit model folders.

Everything family-specific lives in the family tables (``convert/bert.py`` ...); this file only
interprets them, strictly: every HF tensor is consumed, every one of ours is produced, shapes
agree, or a CheckpointError lists what does not.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pretrainkit.config import EncoderConfig, ModelConfig
from pretrainkit.convert import files, sentence_files, tokenizer_files
from pretrainkit.convert.spec import FAMILIES, Family, Head, Mapping, Transform, expand, need
from pretrainkit.errors import CheckpointError, check_tensor_keys, closest
from pretrainkit.fileio import atomic_directory
from pretrainkit.folders import load
from pretrainkit.model import PASSTHROUGH, Model, build_model, load_state_strict
from pretrainkit.workflows.embed import capacity

log = logging.getLogger(__name__)


def family_names() -> list[str]:
    """The HF ``model_type`` names that convert, sorted (``albert``, ``bart``, ``bert`` ...)."""
    return sorted(FAMILIES.names())


def get_family(model_type: str) -> Family:
    """The family registered for a HF ``model_type``; unknown names list the supported ones."""
    if model_type not in FAMILIES:
        # Grouped so the reader sees at once which families are causal decoders.
        names = family_names()

        def has(target: str) -> list[str]:
            return [n for n in names if any(target in h.targets for h in FAMILIES.get(n).heads)]

        causal, seq2seq = has("lm"), has("seq2seq_lm")
        encoders = [n for n in names if n not in causal + seq2seq]
        raise CheckpointError(
            f"unknown model_type {model_type!r}{closest(model_type, FAMILIES.names())}; "
            f"supported: {', '.join(encoders)} (encoders); {', '.join(causal)} (decoders); "
            f"{', '.join(seq2seq)} (encoder-decoders)"
        )
    return FAMILIES.get(model_type)


def _pairs(family: Family, head: Head, model: Model) -> list[Mapping]:
    """(ours, hf, transform) for every tensor, checked to cover our model's state exactly.

    Pairs whose our side is tied to the word embedding are dropped: the tensor is stored once,
    and HF re-ties (or, untied, the table's pair for it applies).
    """
    layers = _num_layers(model)
    body = family.body_keys(model.config)
    pairs = expand(body, layers[0], head.prefix, layers[1])
    pairs += expand(head.keys, layers[0], num_decoder_layers=layers[1])
    aliases = model.tied_parameters()
    pairs = [pair for pair in pairs if pair[0] not in aliases]
    ours = {k for k in model.state_dict() if k not in aliases}
    mapped = {o for o, _, _ in pairs}
    if mapped != ours:
        # The config passed the family's checks, so this is a gap in the family's table.
        raise CheckpointError(
            f"{family.model_type} key map for {head.architecture} does not cover the model: "
            f"unmapped {sorted(ours - mapped)}, unknown {sorted(mapped - ours)}"
        )
    return pairs


def _num_layers(model: Model) -> tuple[int, int]:
    """Layers the encoder and the decoder store (0 without a decoder)."""
    return len(getattr(model.encoder, "layers", [])), len(getattr(model.decoder, "layers", []))


def _fail(source: str, missing: list, unexpected: list, wrong: list, tied: list) -> None:
    check_tensor_keys(source, missing, unexpected, wrong, tied)


def state_from_hf(
    family: Family, head: Head, hf_state: dict[str, torch.Tensor], model: Model, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Our state dict and the pass-through tensors from a HF state dict, strictly."""
    pairs = _pairs(family, head, model)
    shapes = model.state_dict()
    hf_names = list(dict.fromkeys(hf for _, hf, _ in pairs))  # fused tensors appear once
    hf_state = dict(hf_state)
    for ours, hf, transform in pairs:
        if hf in head.optional and hf not in hf_state:
            # What HF would fill in, and what our freshly built model holds already.
            hf_state[hf] = transform.to_hf([shapes[ours].detach().clone()])
    missing = [hf for hf in hf_names if hf not in hf_state]
    want = {hf: transform.hf_shape(tuple(shapes[ours].shape)) for ours, hf, transform in pairs}
    names: dict[str, list[str]] = {}
    for ours, hf, _ in pairs:
        names.setdefault(hf, []).append(ours)
    wrong = [
        f"{hf}: file {tuple(hf_state[hf].shape)} vs {' + '.join(names[hf])} {want[hf]}"
        for hf in hf_names
        if hf in hf_state and tuple(hf_state[hf].shape) != want[hf]
    ]
    # Ignored buffers may be per layer (GPT-2's causal-mask ``h.{i}.attn.bias``).
    layers = _num_layers(model)
    ignored = expand(tuple((k, k) for k in family.ignored), layers[0], head.prefix, layers[1])
    consumed = set(hf_names) | {hf for _, hf, _ in ignored}
    tied = []
    for alias, original in head.tied:
        if alias in hf_state and alias not in want:  # untied: the alias is a real tensor
            consumed.add(alias)
            if original in hf_state and not torch.equal(hf_state[alias], hf_state[original]):
                tied.append(alias)
    passthrough = {k: hf_state[k] for k in head.passthrough if k in hf_state}
    unexpected = sorted(set(hf_state) - consumed - set(passthrough))
    _fail(source, missing, unexpected, wrong, tied)
    # contiguous: a transposed or sliced view would be saved as a view of the whole HF tensor.
    state = {ours: transform.from_hf(hf_state[hf]).contiguous() for ours, hf, transform in pairs}
    return state, passthrough


def state_to_hf(
    family: Family, head: Head, model: Model, passthrough: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The HF state dict of ``model`` (tied copies left for HF to re-tie)."""
    state = model.state_dict()
    grouped: dict[str, list[tuple[Transform, torch.Tensor]]] = {}
    for ours, hf, transform in _pairs(family, head, model):
        grouped.setdefault(hf, []).append((transform, state[ours].detach().cpu()))
    out = {}
    for hf, parts in grouped.items():
        parts.sort(key=lambda item: item[0].part)
        out[hf] = parts[0][0].to_hf([tensor for _, tensor in parts]).contiguous()
    unknown = sorted(set(passthrough) - set(head.passthrough))
    if unknown:
        # A converted base model fine-tuned into another architecture: its pooler has no place.
        log.warning(
            "%s: not written, %s has no place for them: %s",
            PASSTHROUGH,
            head.architecture,
            ", ".join(unknown),
        )
    return {**out, **{k: v for k, v in passthrough.items() if k in head.passthrough}}


def model_from_hf(hf_dir: str | os.PathLike, family: str | None = None) -> tuple[Model, dict]:
    """Build our model from a HF folder; returns it and the pass-through tensors."""
    directory = Path(hf_dir)
    files.require_folder(directory)
    hf = files.read_json(directory / "config.json")
    if not isinstance(hf, dict):
        raise CheckpointError(f"{directory / 'config.json'}: expected a JSON object")
    model_type = family or hf.get("model_type")
    if not model_type:
        raise CheckpointError(f"{directory / 'config.json'}: no model_type; pass --family")
    fam = get_family(str(model_type))
    hf = {**hf, "model_type": fam.model_type}
    if fam.complete_config is not None:
        hf = fam.complete_config(hf)
    architectures = hf.get("architectures") or [fam.heads[0].architecture]
    if len(architectures) != 1:
        raise CheckpointError(f"{directory}: expected one architecture, got {architectures}")
    head = fam.head_for_architecture(architectures[0])
    hf_state, source = files.read_weights(directory)
    if fam.renames:
        renamed = {fam.rename(name): tensor for name, tensor in hf_state.items()}
        if len(renamed) != len(hf_state):
            raise CheckpointError(f"{source}: old and new tensor names collide after renaming")
        hf_state = renamed
    if any(_differ(hf_state, alias, original) for alias, original in head.tied):
        # Stored twice with different values: untied, whatever config.json says (transformers 5
        # writes tie_word_embeddings: true for untied T5 v1.1 heads and unties on load the same way).
        hf["tie_word_embeddings"] = False
    config_dict = fam.config_from_hf(hf)
    config_dict["targets"] = [{"name": t, **fam.target_from_hf(t, hf)} for t in head.targets]
    model = build_model(ModelConfig.from_dict(config_dict, where=f"{directory} (converted)"))
    _refuse_one_way(fam, head, model.config, directory)
    state, passthrough = state_from_hf(fam, head, hf_state, model, source)
    load_state_strict(model, state, source)
    model.tokenizer = tokenizer_files.import_tokenizer(directory)
    model.encode_defaults = sentence_files.sentence_transformers_defaults(directory)
    return model.eval(), passthrough


def _refuse_one_way(fam: Family, head: Head, config: ModelConfig, directory: Path) -> None:
    """Import only what export writes back: the family's translation to HF, run on the config
    the import made, must accept it and choose the same architecture. A model that converts in
    but could not go out again is refused here, with the reason, before anything is written."""
    try:
        hf_config = fam.config_to_hf(config)
        for entry in config.targets:
            hf_config.update(fam.target_to_hf(entry, config))
        back = fam.head_for_targets(tuple(entry.name for entry in config.targets))
    except CheckpointError as err:
        raise CheckpointError(
            f"{directory}: this {fam.model_type} configuration could not be written back to HF "
            f"after conversion ({err}); not converted"
        ) from None
    need(
        back == head,
        f"{directory}: {head.architecture} would be written back as {back.architecture}; "
        "not converted",
    )


def _differ(state: dict[str, torch.Tensor], alias: str, original: str) -> bool:
    if alias not in state or original not in state:
        return False
    a, b = state[alias], state[original]
    return a.shape != b.shape or not torch.equal(a, b)


def convert_from_hf(
    hf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    family: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a HF model folder into a pretrainkit model folder.

    Args:
        hf_dir: folder with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``,
            read with ``weights_only``; sharded indexes too), and optionally the tokenizer files
            and sentence-transformers settings (pooling, normalisation, max_seq_length).
        out_dir: the pretrainkit model folder to write (replaced atomically).
        family: HF ``model_type`` to use instead of the one in config.json.

    Returns:
        ``out_dir``.

    Raises:
        CheckpointError: no such folder (there is no model hub behind it), unknown model_type
            or architecture, a head not supported yet, a configuration that could not be
            written back to HF, tensors missing, left over or of the wrong shape (all listed),
            damaged weights files, or a path in the folder's files that leads outside it.
    """
    model, passthrough = model_from_hf(hf_dir, family)
    model.hf_passthrough = passthrough
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        model.save(tmp)
    if model.tokenizer is None:
        log.warning(
            "%s: no tokenizer found (vocab.txt, vocab.json + merges.txt, tokenizer.json, .model)",
            hf_dir,
        )
    return out


def _reused_blocks(config: ModelConfig) -> list[str]:
    """The options that make a stack apply a block more than once (``encoder.layer_groups: 2``);
    only HF ALBERT computes that (its hidden groups), for an encoder."""
    found = []
    for name, stack in (("encoder", config.encoder), ("decoder", config.decoder)):
        if not isinstance(stack, EncoderConfig):  # none, or an LSTM / CNN stack
            continue
        if stack.share_layers and stack.num_layers > 1:
            found.append(f"{name}.share_layers: true")
        elif stack.layer_groups not in (None, stack.num_layers):
            found.append(f"{name}.layer_groups: {stack.layer_groups}")
    return found


def _family_of(config: ModelConfig, family: str | None) -> Family:
    fam = _choose_family(config, family)
    reused = _reused_blocks(config)
    if reused and config.embedding.factorized_size is None:
        # ALBERT always projects a factorised embedding up to the hidden size; an identity
        # projection would be a model other than the one trained, so refuse instead.
        raise CheckpointError(
            f"{', '.join(reused)} (blocks applied more than once) has no HF family that computes "
            "it without a factorised embedding: HF ALBERT's hidden groups are the only such "
            "stack, and ALBERT needs embedding.factorized_size; give the model one (a distilled "
            "student: factorized_size) or drop the recurrence; not exported"
        )
    need(
        not reused or fam.model_type == "albert",
        f"{', '.join(reused)} (blocks applied more than once) cannot be written as HF "
        f"{fam.model_type}; only albert computes it",
    )
    return fam


def _choose_family(config: ModelConfig, family: str | None) -> Family:
    if family:
        return get_family(family)
    enc, emb = config.encoder, config.embedding
    # Only ALBERT has a factorised embedding or reuses blocks; a student distilled from a
    # converted BERT keeps the name "bert", so the name does not decide then.
    albert = emb.factorized_size is not None or bool(_reused_blocks(config))
    if config.name in FAMILIES and not albert:  # converted models are named after model_type
        return FAMILIES.get(config.name)
    if "patch" in emb.parts:
        return FAMILIES.get("vit")
    if "speech" in emb.parts:
        return FAMILIES.get("speech_to_text")
    if config.decoder is not None:  # relative positions: T5; sinusoidal halves: PEGASUS
        if enc.position == "relative":
            return FAMILIES.get("t5")
        return FAMILIES.get("pegasus" if "sinusoidal_halves" in emb.parts else "bart")
    if enc.causal:  # a decoder-only stack: rotary means LLaMA, absolute positions GPT-2
        return FAMILIES.get("llama" if enc.position == "rotary" else "gpt2")
    if albert:
        return FAMILIES.get("albert")
    return FAMILIES.get("roberta" if emb.position_offset else "bert")


def _tokenizer_class(fam: Family, model: Model) -> str:
    """The HF tokenizer class written for ``model``'s tokenizer: the family's, except that an
    ALBERT with a WordPiece vocabulary (a student distilled from BERT) keeps BertTokenizer;
    transformers' AlbertTokenizer is Unigram only, and AutoTokenizer follows the class named in
    tokenizer_config.json whatever the model_type."""
    tokenizer = model.tokenizer
    wordpiece = tokenizer is not None and tokenizer.kind == "wordpiece"
    return "BertTokenizer" if fam.model_type == "albert" and wordpiece else fam.tokenizer_class


def convert_to_hf(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    family: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a pretrainkit model folder as a HF folder that ``transformers`` loads as is.

    The architecture follows the targets (none → ``BertModel``, mlm → ``...ForMaskedLM``,
    mlm + nsp → ``BertForPreTraining``, classification → ``...ForSequenceClassification``).
    Writes config.json, model.safetensors, the tokenizer (``tokenizer_files.export_tokenizer``);
    with ``encode`` defaults recorded (``encode.json``) also the sentence-transformers files
    (modules.json, sentence_bert_config.json, 1_Pooling, 2_Normalize), so that
    ``SentenceTransformer(out_dir)`` embeds as ``Model.encode``.

    Raises:
        CheckpointError: the model uses something the HF family cannot compute (named).
    """
    model = load(model_dir)
    if model.whitening is not None:
        raise CheckpointError(
            f"{model_dir}: the folder holds a sentence-vector whitening (whitening.safetensors), "
            "which the HF / sentence-transformers files cannot express yet; export the folder "
            "it was fitted on (embed --whiten-out wrote this one as a copy)"
        )
    config = model.config
    fam = _family_of(config, family)
    head = fam.head_for_targets(tuple(t.name for t in config.targets))
    hf: dict[str, Any] = fam.config_to_hf(config)
    for entry in config.targets:
        hf.update(fam.target_to_hf(entry, config))
    tokenizer = model.tokenizer
    # Only a declared pad token is HF's pad_token_id: a borrowed one (GPT-2's and LLaMA's is
    # eos) would make HF's embedding treat eos as padding (no gradient to its row).
    if tokenizer is not None and tokenizer.special_tokens["pad"] is not None:
        if "pad_token_id" in hf and hf["pad_token_id"] != tokenizer.pad_id:
            raise CheckpointError(
                f"the tokenizer pads with id {tokenizer.pad_id}, {fam.model_type} positions "
                f"need pad_token_id {hf['pad_token_id']}"
            )
        hf["pad_token_id"] = tokenizer.pad_id
    if fam.pad_token_id is not None:
        hf.setdefault("pad_token_id", fam.pad_token_id)
    hf["architectures"] = [head.architecture]
    state = state_to_hf(fam, head, model, model.hf_passthrough)
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        written = []
        if tokenizer is not None:
            written = tokenizer_files.export_tokenizer(tokenizer, tmp, _tokenizer_class(fam, model))
        if written and model.encode_defaults:
            sentence_files.write_sentence_transformers(
                model.encode_defaults, config.hidden_size, capacity(model), tmp
            )
    return out
