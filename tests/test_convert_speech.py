"""Speech2Text ⇄ pretrainkit through the real converter, on CPU fp32.

Tiny HF models with random weights and odd sizes (3 heads of 16, 12 mel bins, two convolutions of
different kernels, decoder feed-forward unlike the encoder's) are saved with ``save_pretrained``,
converted, compared on a padded batch of frames and tokens, converted back bit for bit and
reloaded with transformers' Auto class. Greedy and beam generation from ``input_features`` match
transformers' ``generate`` token for token on a padded batch.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import require

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf
from pretrainkit.embeddings.speech import FairseqSinusoidalPositionEmbedding
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.generation import generate

tf = require("transformers")

from convert_helpers import broken_checkpoint_error, export_bit_exact  # noqa: E402

MEL = 12
SIZES = dict(
    vocab_size=97,
    d_model=48,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=3,
    decoder_attention_heads=3,
    encoder_ffn_dim=96,
    decoder_ffn_dim=80,
    max_source_positions=40,
    max_target_positions=30,
    conv_channels=40,
    conv_kernel_sizes=[5, 3],
    num_conv_layers=2,
    input_feat_per_channel=MEL,
)
# Nothing forced: both sides run exactly max_new_tokens steps from the decoder start id.
FREE = dict(eos_token_id=None, forced_eos_token_id=None, forced_bos_token_id=None, min_length=0)


def s2t_config(**extra):
    return tf.Speech2TextConfig(**{**SIZES, **extra})


def frames(lengths: list[int], width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded features [b, width, MEL] (zeros past each length) and their frame mask."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), width, MEL, generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return features * mask[..., None], mask


def tokens(lengths: list[int], width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids.masked_fill(mask == 0, 1), mask


CASES = {
    "tied": lambda: tf.Speech2TextForConditionalGeneration(s2t_config()),
    "untied-gelu-unscaled": lambda: tf.Speech2TextForConditionalGeneration(
        s2t_config(tie_word_embeddings=False, activation_function="gelu", scale_embedding=False)
    ),
    "base": lambda: tf.Speech2TextModel(s2t_config()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hf_parity_and_bit_exact_round_trip(tmp_path, case):
    torch.manual_seed(0)
    hf = CASES[case]().eval()
    if case.startswith("untied"):
        with torch.no_grad():
            hf.lm_head.weight.normal_(std=0.05)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    lm = ours.targets["seq2seq_lm"] if "seq2seq_lm" in ours.targets else None
    if lm is not None:
        assert (lm.decoder.weight is ours.tgt_embedding.word_weight) == (case == "tied")

    features, mask = frames([37, 30, 11], 37, seed=1)
    tgt, tgt_mask = tokens([9, 5, 7], 9, seed=2)
    with torch.no_grad():
        expected = hf(
            input_features=features, attention_mask=mask, decoder_input_ids=tgt,
            decoder_attention_mask=tgt_mask, output_hidden_states=True,
        )  # fmt: skip
        got = ours(
            input_features=features, attention_mask=mask, decoder_input_ids=tgt,
            decoder_attention_mask=tgt_mask,
        )  # fmt: skip
    # Two stride-2 convolutions: 37 → 19 → 10 frames; lengths as HF subsamples them.
    keep = ours.encoder_mask(mask).bool()
    assert keep.sum(1).tolist() == [10, 8, 3]
    hf_keep = hf.get_encoder()._get_feature_vector_attention_mask(10, mask)
    assert torch.equal(keep, hf_keep.bool())
    encoder_diff = (expected.encoder_last_hidden_state - got.encoder_hidden_states)[keep]
    assert encoder_diff.abs().max().item() <= 1e-5
    tgt_keep = tgt_mask.bool()
    decoder_hidden = expected.decoder_hidden_states[-1]
    assert (decoder_hidden - got.hidden_states)[tgt_keep].abs().max().item() <= 1e-5
    if lm is not None:
        assert (expected.logits - got.logits)[tgt_keep].abs().max().item() <= 1e-5
        # Labels alone: the decoder input is built the same way (shift right, -100 → pad).
        labels = tgt.masked_fill(~tgt_keep, -100)
        with torch.no_grad():
            hf_loss = hf(input_features=features, attention_mask=mask, labels=labels).loss
            our_loss = ours(input_features=features, attention_mask=mask, labels=labels).loss
        assert our_loss.item() == pytest.approx(hf_loss.item(), abs=1e-5)

    auto = tf.AutoModelForSpeechSeq2Seq if lm is not None else tf.AutoModel
    again = export_bit_exact(tmp_path / "ours", tmp_path, hf, auto)
    with torch.no_grad():
        again_out = again(
            input_features=features, attention_mask=mask, decoder_input_ids=tgt,
            decoder_attention_mask=tgt_mask,
        )  # fmt: skip
    name = "logits" if lm is not None else "last_hidden_state"
    assert torch.equal(getattr(again_out, name)[tgt_keep], getattr(expected, name)[tgt_keep])


def test_position_table_is_transformers_own_bit_for_bit():
    from transformers.models.speech_to_text.modeling_speech_to_text import (
        Speech2TextSinusoidalPositionalEmbedding as Theirs,
    )

    for size in (48, 51):  # odd widths get a zero column in both
        ours = FairseqSinusoidalPositionEmbedding(max_positions=500, size=size).table
        assert torch.equal(ours[2:], Theirs.get_embedding(500, size, padding_idx=1)[2:])


def test_generation_from_features_matches_transformers_generate(tmp_path):
    torch.manual_seed(0)
    hf = tf.Speech2TextForConditionalGeneration(s2t_config(init_std=0.3)).eval()
    # A random model repeats one token forever (each hidden state is closest to its own input
    # embedding in the tied head); small word vectors and a strong pull from the encoder make
    # every step, and every input, differ.
    with torch.no_grad():
        hf.model.decoder.embed_tokens.weight.normal_(std=0.05)
        for layer in hf.model.decoder.layers:
            layer.encoder_attn.v_proj.weight.normal_(std=1.0)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    features, mask = frames([37, 30, 11], 37, seed=1)
    expected = hf.generate(
        input_features=features, attention_mask=mask, max_new_tokens=12, do_sample=False,
        num_beams=1, **FREE,
    )[:, 1:].tolist()  # fmt: skip
    # A degenerate repetition would prove little; and every input must matter.
    assert all(len(set(row)) >= 3 for row in expected) and len(set(sum(expected, []))) >= 10
    assert len({tuple(row) for row in expected}) == 3
    for use_cache in (True, False):
        got = generate(
            ours, None, 12, input_features=features, attention_mask=mask, use_cache=use_cache
        )
        assert got == expected
    beams = hf.generate(
        input_features=features, attention_mask=mask, max_new_tokens=8, num_beams=3,
        do_sample=False, early_stopping=False, **FREE,
    )[:, 1:].tolist()  # fmt: skip
    got_beams = generate(
        ours, None, 8, strategy="beam", num_beams=3, input_features=features, attention_mask=mask
    )
    assert got_beams == beams


def test_generation_refuses_mixed_or_malformed_inputs(tmp_path):
    torch.manual_seed(0)
    tf.Speech2TextForConditionalGeneration(s2t_config()).save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours"))
    features, mask = frames([8, 5], 8, seed=1)
    with pytest.raises(ConfigError, match="exactly one of input_ids and input_features"):
        generate(ours, [[3, 4]], 2, input_features=features)
    with pytest.raises(ConfigError, match=r"attention_mask \(2, 7\) must be \[batch, frames\]"):
        generate(ours, None, 2, input_features=features, attention_mask=mask[:, :7])
    with pytest.raises(ConfigError, match="at least one frame"):
        generate(ours, None, 2, input_features=features, attention_mask=mask * 0)
    with pytest.raises(ConfigError, match=r"input_features must be \[batch, frames"):
        generate(ours, None, 2, input_features=features[0])
    with pytest.raises(ConfigError, match="reads speech input, not token ids; give input_features"):
        generate(ours, [[3, 4]], 2)


def test_unsupported_configurations_are_refused_before_anything_is_written(tmp_path):
    for extra, message in (
        ({"input_channels": 2}, "only one feature channel"),
        ({"decoder_start_token_id": 1}, "decoder_start_token_id equal to pad_token_id"),
        ({"num_conv_layers": 3}, r"num_conv_layers \(3\) differs"),
    ):
        folder = tmp_path / str(len(message))
        torch.manual_seed(0)
        tf.Speech2TextForConditionalGeneration(s2t_config()).save_pretrained(folder / "hf")
        config = (folder / "hf" / "config.json").read_text()
        key, value = next(iter(extra.items()))
        data = json.loads(config)
        data[key] = value
        (folder / "hf" / "config.json").write_text(json.dumps(data))
        with pytest.raises(CheckpointError, match=message):
            convert_from_hf(folder / "hf", folder / "ours")
        assert not (folder / "ours").exists()


def test_missing_convolution_is_named(tmp_path):
    gone = "model.encoder.conv.conv_layers.1.bias"

    def change(state):
        state.pop(gone)

    hf = tf.Speech2TextForConditionalGeneration(s2t_config())
    assert gone in broken_checkpoint_error(tmp_path, hf, change)


def test_export_refuses_what_speech2text_cannot_compute(tmp_path):
    torch.manual_seed(0)
    tf.Speech2TextForConditionalGeneration(s2t_config()).save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours"))
    config = ours.config.to_dict()
    config["embedding"]["layer_norm"] = True  # Speech2Text has no norm on the embeddings
    changed = pretrainkit.build_model(config)
    changed.save(tmp_path / "changed")
    with pytest.raises(CheckpointError, match="embedding.layer_norm is True, speech_to_text needs"):
        convert_to_hf(tmp_path / "changed", tmp_path / "back")
    assert not (tmp_path / "back").exists()
