import math

import pytest
import torch
from helpers import require
from safetensors.torch import load_file, save_file

import pretrainkit
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.layers.norms import RMSNorm
from pretrainkit.layers.positions import RotaryEmbedding, alibi_slopes, apply_rotary

SHRINK = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 128,
    "embedding.max_positions": 64,
}


def batch(vocab=1000, b=2, s=12, pad_from=8):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    if b > 1:
        mask[1, pad_from:] = 0
        ids[1, pad_from:] = 0
    return ids, mask


SHRINK_DECODER = {
    "decoder.num_layers": 2,
    "decoder.num_heads": 2,
    "decoder.ffn_size": 128,
    "tgt_embedding.max_positions": 64,
}


def hf_seq2seq_count(name, config):
    import transformers as tf

    enc, dec = config.encoder, config.decoder
    with torch.device("meta"):
        if name.startswith("t5"):
            model = tf.T5ForConditionalGeneration(tf.T5Config(
                vocab_size=config.vocab_size, d_model=config.hidden_size, d_kv=enc.head_dim,
                d_ff=enc.ffn_size, num_layers=enc.num_layers, num_heads=enc.num_heads,
                feed_forward_proj="gated-gelu" if enc.ffn == "gated" else "relu",
            ))  # fmt: skip
            # HF 5 builds T5 tied; a v1.1 checkpoint brings its own lm_head.
            untied = 0 if config.targets[0].options["tied"] else model.lm_head.weight.numel()
            return sum(p.numel() for p in model.parameters()) + untied
        cls, cfg = (
            (tf.PegasusForConditionalGeneration, tf.PegasusConfig)
            if name.startswith("pegasus")
            else (tf.BartForConditionalGeneration, tf.BartConfig)
        )
        model = cls(cfg(
            vocab_size=config.vocab_size, d_model=config.hidden_size,
            encoder_layers=enc.num_layers, decoder_layers=dec.num_layers,
            encoder_attention_heads=enc.num_heads, decoder_attention_heads=dec.num_heads,
            encoder_ffn_dim=enc.ffn_size, decoder_ffn_dim=dec.ffn_size,
            max_position_embeddings=1024,
        ))  # fmt: skip
    # PEGASUS' frozen sinusoidal tables are buffers here; BART's final_logits_bias (a buffer
    # in HF) is our LM head's bias parameter.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable + model.final_logits_bias.numel()


def hf_reference_count(name):
    import transformers as tf

    config = pretrainkit.load_model_config(name)
    if config.decoder is not None:
        return hf_seq2seq_count(name, config)
    if name.startswith("vit"):
        with torch.device("meta"):
            vit = tf.ViTModel(tf.ViTConfig(image_size=224, patch_size=16), add_pooling_layer=False)
        return sum(p.numel() for p in vit.parameters())
    enc = config.encoder
    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=enc.num_layers,
        num_attention_heads=enc.num_heads,
        intermediate_size=enc.ffn_size,
        max_position_embeddings=config.embedding.max_positions,
    )
    with torch.device("meta"):
        if name.startswith("bert"):
            model = tf.BertForPreTraining(tf.BertConfig(**common))
        elif name.startswith("roberta"):
            model = tf.RobertaForMaskedLM(tf.RobertaConfig(**common, type_vocab_size=1))
        elif name.startswith("xlm-roberta"):
            model = tf.XLMRobertaForMaskedLM(tf.XLMRobertaConfig(**common, type_vocab_size=1))
        elif name.startswith("albert"):
            model = tf.AlbertForPreTraining(tf.AlbertConfig(**common, embedding_size=128))
        elif name.startswith("llama"):
            model = tf.LlamaForCausalLM(
                tf.LlamaConfig(
                    **common,
                    num_key_value_heads=enc.num_kv_heads or enc.num_heads,
                    tie_word_embeddings=False,
                )
            )
        else:
            model = tf.GPT2LMHeadModel(
                tf.GPT2Config(
                    vocab_size=config.vocab_size,
                    n_embd=768,
                    n_layer=12,
                    n_head=12,
                    n_positions=1024,
                )
            )
    return sum(p.numel() for p in model.parameters())


def vision_one_step(name):
    shrink = {
        "hidden_size": 64,
        "encoder.num_layers": 2,
        "encoder.num_heads": 2,
        "encoder.ffn_size": 128,
        "embedding.image_size": 32,
        "embedding.patch_size": 8,
        "embedding.max_positions": 17,
        "targets": [{"name": "classification", "labels": ["a", "b"], "pooler": False}],
    }
    torch.manual_seed(0)
    model = pretrainkit.build_model(name, shrink).eval()
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = model(pixel_values=pixels, labels=labels).loss
    first.backward()
    optimizer.step()
    assert model(pixel_values=pixels, labels=labels).loss.item() < first.item()


# Speech presets (s2t-*) read audio features: tests/test_speech_model.py builds and trains them.
@pytest.mark.parametrize("name", [n for n in pretrainkit.list_presets() if not n.startswith("s2t")])
def test_every_preset_builds_full_size_and_trains_one_step_shrunk(name):
    require("transformers")
    with torch.device("meta"):
        full = pretrainkit.build_model(name)
    # Same shapes as the original architecture, counted against transformers' own class.
    assert sum(p.numel() for p in full.parameters()) == hf_reference_count(name)

    seq2seq = full.config.decoder is not None
    if "patch" in full.config.embedding.parts:
        vision_one_step(name)
        return
    model = pretrainkit.build_model(name, {**SHRINK, **(SHRINK_DECODER if seq2seq else {})})
    ids, mask = batch()
    kwargs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    names = [t.name for t in model.config.targets]
    if "mlm" in names:
        labels = torch.full_like(ids, -100)
        labels[:, 2:5] = ids[:, 2:5]
        kwargs["labels"] = labels
    if "lm" in names or "seq2seq_lm" in names:
        kwargs["labels"] = ids.masked_fill(mask == 0, -100)
    if {"nsp", "sop"} & set(names):
        kwargs["pair_labels"] = torch.tensor([0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.eval()  # no dropout: the same batch must score better after the step
    first = model(**kwargs).loss
    first.backward()
    optimizer.step()
    assert math.isfinite(first.item())
    assert model(**kwargs).loss.item() < first.item()


@pytest.mark.parametrize(
    "encoder",
    [
        {"position": "absolute"},
        {
            "position": "rotary",
            "norm": "rmsnorm",
            "ffn": "gated",
            "activation": "silu",
            "norm_position": "pre",
            "num_kv_heads": 1,
        },
        {"position": "alibi", "causal": True, "norm_position": "pre"},
        {"position": "relative", "bias": False},
        {"position": "absolute", "share_layers": True, "activation": "gelu_tanh"},
    ],
)
def test_padding_does_not_change_real_positions(encoder):
    parts = ["word", "position", "segment"] if encoder["position"] == "absolute" else ["word"]
    model = pretrainkit.build_model(
        {
            "vocab_size": 1000,
            "hidden_size": 64,
            "embedding": {"parts": parts, "max_positions": 64},
            "encoder": {"num_layers": 2, "num_heads": 4, "ffn_size": 128, **encoder},
        }
    ).eval()
    ids, _ = batch(b=1, s=8)
    short = model(ids).hidden_states
    padded_ids = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 5)], 1).long()
    long = model(padded_ids, attention_mask=mask).hidden_states
    torch.testing.assert_close(long[:, :8], short, atol=1e-5, rtol=1e-5)


def test_causal_positions_ignore_the_future():
    model = pretrainkit.build_model("gpt2-small", SHRINK).eval()
    ids, _ = batch(b=1, s=10)
    changed = ids.clone()
    changed[0, 7:] = 3
    a = model(ids).hidden_states
    b = model(changed).hidden_states
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_shared_layers_and_factorised_embedding_shrink_the_model():
    plain = pretrainkit.build_model("bert-tiny")
    albert = pretrainkit.build_model(
        "bert-tiny", {"encoder.share_layers": True, "embedding.factorized_size": 32}
    )
    one_block = sum(p.numel() for p in plain.encoder.layers[0].parameters())
    assert len(albert.encoder.layers) == 1
    assert albert.embedding.word_weight.shape == (30522, 32)
    # One block fewer; word/position/segment tables and their norm at 32 wide; plus the projection.
    saved = one_block + (30522 + 512 + 2) * (128 - 32) + 2 * (128 - 32) - (32 * 128 + 128)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # The MLM head's transform maps to 32 wide (dense, its bias and its norm).
    head = (128 * 128 + 128 + 2 * 128) - (128 * 32 + 32 + 2 * 32)
    assert count(plain) - count(albert) == saved + head


def test_rotary_depends_only_on_relative_offset():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m, n):
        cm, sm = rope(torch.tensor([m]))
        cn, sn = rope(torch.tensor([n]))
        return (apply_rotary(q, cm, sm) * apply_rotary(k, cn, sn)).sum()

    torch.testing.assert_close(score(3, 1), score(10, 8))
    assert not torch.isclose(score(3, 1), score(3, 2))


def test_alibi_slopes_and_rmsnorm():
    assert alibi_slopes(8).tolist() == [2.0 ** -(i + 1) for i in range(8)]
    x = torch.randn(4, 32) * 7
    y = RMSNorm(32)(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4), atol=1e-3, rtol=1e-3)


def test_save_load_round_trip_ties_once(tmp_path):
    model = pretrainkit.build_model("bert-tiny", SHRINK).eval()
    ids, mask = batch()
    before = model(ids, attention_mask=mask).logits
    model.save(tmp_path / "m")
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert "targets.mlm.decoder.weight" not in stored  # tied to the word embedding
    again = pretrainkit.load(tmp_path / "m")
    assert not again.training  # loaded for inference: dropout off, outputs repeatable
    assert again.targets["mlm"].decoder.weight is again.embedding.word_weight
    torch.testing.assert_close(again(ids, attention_mask=mask).logits, before, atol=0, rtol=0)


def test_load_lists_missing_unexpected_and_misshapen_tensors(tmp_path):
    model = pretrainkit.build_model("bert-tiny", SHRINK)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    state = load_file(str(path))
    del state["encoder.layers.0.attention.query.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["embedding.parts.segment.weight"] = torch.zeros(3, 64)
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        pretrainkit.load(tmp_path / "m")
    message = str(info.value)
    assert "missing tensors: encoder.layers.0.attention.query.weight" in message
    assert "unexpected tensors: extra.weight" in message
    assert "embedding.parts.segment.weight: file (3, 64) vs model (2, 64)" in message


def test_classification_pooling_ignores_padding():
    from pretrainkit.targets.classification import pool

    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(pool(hidden, mask, "mean")[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "max")[0], hidden[0, :3].max(0).values)
    torch.testing.assert_close(pool(hidden, mask, "last")[0], hidden[0, 2])
    torch.testing.assert_close(pool(hidden, mask, "first")[1], hidden[1, 0])


def test_bert_encoder_matches_transformers_numerically():
    """Post-norm BERT agrees with transformers' BertModel given the same weights.

    The key map here is the minimal one for this check; the declarative converter of the
    model-families work supersedes it.
    """
    tf = require("transformers")
    ours = pretrainkit.build_model("bert-tiny", {**SHRINK, "encoder.num_heads": 4}).eval()
    hf = tf.BertModel(
        tf.BertConfig(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    ).eval()
    mapping = {
        "embeddings.word_embeddings.weight": "embedding.parts.word.weight",
        "embeddings.position_embeddings.weight": "embedding.parts.position.weight",
        "embeddings.token_type_embeddings.weight": "embedding.parts.segment.weight",
        "embeddings.LayerNorm.weight": "embedding.norm.weight",
        "embeddings.LayerNorm.bias": "embedding.norm.bias",
    }
    names = {
        "attention.self.query": "attention.query",
        "attention.self.key": "attention.key",
        "attention.self.value": "attention.value",
        "attention.output.dense": "attention.output",
        "attention.output.LayerNorm": "attention_norm",
        "intermediate.dense": "feed_forward.up",
        "output.dense": "feed_forward.down",
        "output.LayerNorm": "ffn_norm",
    }
    for i in range(2):
        for theirs, mine in names.items():
            for kind in ("weight", "bias"):
                mapping[f"encoder.layer.{i}.{theirs}.{kind}"] = f"encoder.layers.{i}.{mine}.{kind}"
    state = dict(ours.named_parameters())
    with torch.no_grad():
        for theirs, tensor in hf.state_dict().items():
            if theirs in mapping:
                state[mapping[theirs]].copy_(tensor)
    assert set(mapping) == {
        k for k in hf.state_dict() if "position_ids" not in k and "token_type_ids" not in k
    }
    ids, mask = batch()
    expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    got = ours(ids, attention_mask=mask).hidden_states
    keep = mask.bool()
    assert (got[keep] - expected[keep]).abs().max().item() <= 1e-5


def test_accuracy_ignores_padding():
    from pretrainkit.targets.base import accuracy

    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    assert accuracy(logits, torch.tensor([1, 1, -100])).item() == 0.5


def _tiny_t5(init: str) -> pretrainkit.Model:
    torch.manual_seed(0)
    overrides = {"vocab_size": 40, "hidden_size": 64, "init": init}
    for stack in ("encoder", "decoder"):
        overrides |= {f"{stack}.num_layers": 1, f"{stack}.num_heads": 2, f"{stack}.head_dim": 32}
        overrides |= {f"{stack}.ffn_size": 128, f"{stack}.dropout": 0.0}
        overrides |= {f"{stack}.attention_dropout": 0.0, f"{stack}.ffn_dropout": 0.0}
    return pretrainkit.build_model("t5-small", overrides)


def test_t5_init_follows_t5_and_lets_a_t5_shape_learn_from_scratch():
    """``init: t5`` draws T5's scales; with BERT's N(0, 0.02) the tied, hidden^-0.5-rescaled head
    of a T5 shape gives near-zero logits and a copy task hardly moves in 50 steps."""
    model = _tiny_t5("t5")
    assert model.config.init == "t5" and "init" not in _tiny_t5("bert").config.to_dict()
    stds = {n: float(p.detach().std()) for n, p in model.named_parameters()}
    assert stds["embedding.parts.word.weight"] == pytest.approx(1.0, rel=0.05)
    assert stds["encoder.layers.0.attention.query.weight"] == pytest.approx(
        (64 * 32) ** -0.5, rel=0.1
    )
    assert stds["decoder.layers.0.feed_forward.down.weight"] == pytest.approx(128**-0.5, rel=0.1)
    with pytest.raises(ConfigError, match="init"):
        _tiny_t5("xavier")

    drops = {}
    for init in ("bert", "t5"):
        net = _tiny_t5(init)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(50):
            ids = torch.randint(3, 40, (8, 8), generator=generator)
            loss = net(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        drops[init] = sum(losses[:5]) / 5 - sum(losses[-5:]) / 5
    assert drops["t5"] > 0.2 and drops["t5"] > 4 * drops["bert"], drops
