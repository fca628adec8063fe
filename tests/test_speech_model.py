"""The ``speech`` embedding part, speech models built from configs, and the ``s2t-small`` preset.

Input is log-mel features ``[b, frames, num_mel_bins]`` with a frame mask; the strided
convolutions shorten the sequence, and the model hands the encoder (and the decoder's
cross-attention, and the targets) the mask of the shorter sequence.
"""

from __future__ import annotations

import pytest
import torch
from helpers import require

import pretrainkit
from pretrainkit.errors import ConfigError

MEL = 8


def tiny(targets=None, **embedding) -> dict:
    """A speech-to-text model of hidden 32, one layer per stack, 8 mel bins, vocab 20."""
    positions = {"max_positions": 40, "position_offset": 2, "layer_norm": False, "dropout": 0.0}
    stack = {"num_layers": 1, "num_heads": 2, "ffn_size": 64, "norm_position": "pre",
             "dropout": 0.0, "attention_dropout": 0.0}  # fmt: skip
    config = {
        "hidden_size": 32,
        "vocab_size": 20,
        "embedding": {
            "parts": ["speech", "sinusoidal_fairseq"],
            "num_mel_bins": MEL,
            "conv_channels": 16,
            "conv_kernel_sizes": [5, 3],
            "scale_word": True,
            **positions,
            **embedding,
        },  # fmt: skip
        "encoder": stack,
        "tgt_embedding": {"parts": ["word", "sinusoidal_fairseq"], **positions},
        "decoder": {**stack, "start_id": 2, "pad_id": 1},
        "share_embedding": False,
        "targets": targets or [{"name": "seq2seq_lm", "tied": True}],
    }
    return config


def frames(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return torch.randn(len(lengths), width, MEL, generator=g) * mask[..., None], mask


def test_s2t_small_preset_has_transformers_shapes_and_parameter_count():
    tf = require("transformers")
    config = pretrainkit.load_model_config("s2t-small")
    hf_config = tf.Speech2TextConfig()  # the defaults are the small model
    emb, enc, dec = config.embedding, config.encoder, config.decoder
    assert dec is not None and config.tgt_embedding is not None
    got = (config.hidden_size, enc.num_layers, dec.num_layers, enc.num_heads, enc.ffn_size,
           emb.num_mel_bins, emb.conv_kernel_sizes, emb.conv_channels, config.vocab_size,
           emb.max_positions - emb.position_offset,
           config.tgt_embedding.max_positions - config.tgt_embedding.position_offset)  # fmt: skip
    want = (256, 12, 6, 4, 2048, 80, [5, 5], 1024, 10000, 6000, 1024)
    assert got == want
    assert want == (
        hf_config.d_model, hf_config.encoder_layers, hf_config.decoder_layers,
        hf_config.encoder_attention_heads, hf_config.encoder_ffn_dim,
        hf_config.input_feat_per_channel, list(hf_config.conv_kernel_sizes), hf_config.conv_channels,
        hf_config.vocab_size, hf_config.max_source_positions, hf_config.max_target_positions,
    )  # fmt: skip
    with torch.device("meta"):
        ours = pretrainkit.build_model("s2t-small")
        theirs = tf.Speech2TextForConditionalGeneration(hf_config)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 29_536_256


def test_s2t_small_shrunk_learns_a_transcript_per_utterance():
    # Three utterances, three different 5-token transcripts: teacher-forced loss must collapse.
    torch.manual_seed(0)
    shrink = {
        "hidden_size": 32, "vocab_size": 24, "encoder.num_layers": 2, "decoder.num_layers": 1,
        "encoder.num_heads": 2, "decoder.num_heads": 2, "encoder.ffn_size": 64,
        "decoder.ffn_size": 64, "embedding.num_mel_bins": MEL, "embedding.conv_channels": 16,
        "embedding.dropout": 0.0, "tgt_embedding.dropout": 0.0, "encoder.dropout": 0.0,
        "decoder.dropout": 0.0,
    }  # fmt: skip
    model = pretrainkit.build_model("s2t-small", shrink)
    features, mask = frames([30, 22, 13], 30, seed=1)
    labels = torch.tensor([[5, 6, 7, 8, 2], [9, 10, 11, 2, -100], [12, 13, 2, -100, -100]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(input_features=features, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.5 and losses[-1] < 0.3 * losses[0], losses[::10]


def test_encoder_mask_follows_the_convolution_arithmetic():
    model = pretrainkit.build_model(tiny())
    features, mask = frames([23, 17, 4, 1], 23)
    keep = model.encoder_mask(mask)
    # kernel 5 then 3, stride 2, padding k // 2: L → (L - 1) // 2 + 1, twice.
    assert keep.shape == (4, 6) and keep.dtype == mask.dtype
    assert keep.sum(1).tolist() == [6, 5, 1, 1]
    assert model.embedding(features).shape == (4, 6, 32)
    hidden = model(input_features=features, attention_mask=mask, decoder_input_ids=mask[:, :3])
    assert hidden.encoder_hidden_states is not None
    assert hidden.encoder_hidden_states.shape == (4, 6, 32)
    # Text models: the mask passes through unchanged.
    text = pretrainkit.build_model("bert-tiny")
    ids_mask = torch.ones(2, 5, dtype=torch.long)
    assert text.encoder_mask(ids_mask) is ids_mask


def test_padding_frames_do_not_reach_real_encoder_positions():
    # Frames past a row's length that no real output frame's receptive field covers change nothing.
    torch.manual_seed(0)
    model = pretrainkit.build_model(tiny()).eval()
    features, mask = frames([8], 32, seed=3)
    noisy = features.clone()
    noisy[:, 20:] = torch.randn(1, 12, MEL)
    with torch.no_grad():
        a = model.encoder_states(features, mask)
        b = model.encoder_states(noisy, mask)
    keep = model.encoder_mask(mask).bool()
    assert keep.sum().item() == 2
    assert torch.equal(a[keep], b[keep])


def test_speech_classifier_pools_over_the_subsampled_mask_and_learns():
    # An encoder-only speech model: the target gets the mask of the subsampled frames.
    torch.manual_seed(0)
    config = tiny(targets=[{"name": "classification", "labels": ["low", "high"],
                            "pooling": "mean", "pooler": False}])  # fmt: skip
    for key in ("tgt_embedding", "decoder", "share_embedding"):
        config.pop(key)
    model = pretrainkit.build_model(config)
    features, mask = frames([24, 24, 15, 9, 20, 12], 24, seed=4)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    features = features + (labels[:, None, None] * 2 - 1) * 0.5 * mask[..., None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        out = model(input_features=features, attention_mask=mask, labels=labels)
        assert out.loss is not None
        first = out.loss.item() if first is None else first
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(input_features=features, attention_mask=mask, labels=labels)
    assert final.loss is not None and final.loss.item() < 0.5 * first
    assert final.metrics["accuracy"].item() == 1.0


def test_save_and_load_rebuild_the_computed_position_tables(tmp_path):
    torch.manual_seed(0)
    model = pretrainkit.build_model(tiny()).eval()
    assert not [k for k in model.state_dict() if "sinusoidal" in k]  # computed, never stored
    model.save(tmp_path / "m")
    again = pretrainkit.load(tmp_path / "m").eval()
    features, mask = frames([16, 9], 16)
    decoder_ids = torch.tensor([[2, 5, 6], [2, 7, 1]])
    with torch.no_grad():
        a = model(input_features=features, attention_mask=mask, decoder_input_ids=decoder_ids)
        b = again(input_features=features, attention_mask=mask, decoder_input_ids=decoder_ids)
    assert a.logits is not None and b.logits is not None
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_mel_bins": None}, "needs num_mel_bins"),
        ({"conv_kernel_sizes": [5, 4]}, r"one odd kernel size per convolution, got \[5, 4\]"),
        ({"conv_kernel_sizes": []}, "one odd kernel size per convolution"),
        ({"conv_channels": 15}, r"conv_channels \(15\) must be even"),
        ({"parts": ["speech", "word"]}, "exactly one of 'word'"),
    ],
)
def test_bad_speech_configs_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        pretrainkit.build_model(tiny(**change))


def test_share_embedding_needs_a_source_word_table():
    with pytest.raises(ConfigError, match="share_embedding: the source embedding has no word"):
        pretrainkit.build_model({**tiny(), "share_embedding": True})


def test_wrong_inputs_are_refused_with_the_expected_shape():
    model = pretrainkit.build_model(tiny())
    features, mask = frames([6], 6)
    with pytest.raises(ValueError, match=r"expected input features \[batch, frames, 8\]"):
        model(input_features=features[..., :5], decoder_input_ids=mask[:, :2])
    with pytest.raises(ValueError, match="exactly one of input_ids and pixel_values"):
        model(input_ids=mask, input_features=features, decoder_input_ids=mask[:, :2])
    with pytest.raises(ValueError, match=r"frame mask \[batch, frames\]"):
        model.encoder_mask(mask[0])


def test_a_model_from_the_preset_exports_to_transformers(tmp_path):
    # Not named after a HF model_type: the export finds the family from the speech part.
    tf = require("transformers")
    from pretrainkit.convert import convert_to_hf

    torch.manual_seed(0)
    shrink = {
        "hidden_size": 32, "vocab_size": 24, "encoder.num_layers": 1, "decoder.num_layers": 1,
        "encoder.ffn_size": 64, "decoder.ffn_size": 64, "embedding.num_mel_bins": MEL,
        "embedding.conv_channels": 16,
    }  # fmt: skip
    model = pretrainkit.build_model("s2t-small", shrink).eval()
    model.save(tmp_path / "ours")
    hf = tf.Speech2TextForConditionalGeneration.from_pretrained(
        convert_to_hf(tmp_path / "ours", tmp_path / "hf")
    ).eval()
    features, mask = frames([20, 11], 20, seed=5)
    decoder_ids = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10]])
    with torch.no_grad():
        want = hf(input_features=features, attention_mask=mask, decoder_input_ids=decoder_ids)
        got = model(input_features=features, attention_mask=mask, decoder_input_ids=decoder_ids)
    assert got.logits is not None
    assert (want.logits - got.logits).abs().max().item() <= 1e-5
