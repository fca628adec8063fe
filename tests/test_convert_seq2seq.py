"""T5 (v1.0, v1.1), BART and PEGASUS ⇄ pretrainkit through the real converter, on CPU fp32.

Tiny HF encoder-decoders with random weights and odd sizes (3 heads of 16, 3 encoder and 2
decoder layers, decoder feed-forward unlike the encoder's where the family allows it) are saved
with ``save_pretrained``, converted, compared on padded source and target batches, converted
back bit for bit and reloaded with transformers' Auto classes. Greedy and beam generation match
transformers' ``generate`` token for token.
"""

from __future__ import annotations

import pytest
import torch
from helpers import require  # noqa: E402

import pretrainkit
from pretrainkit.config import ModelConfig
from pretrainkit.convert import convert_from_hf, convert_to_hf
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.generation import generate

tf = require("transformers")

from convert_helpers import broken_checkpoint_error, export_bit_exact  # noqa: E402

BART_SIZES = dict(
    vocab_size=1000,
    d_model=48,
    encoder_layers=3,
    decoder_layers=2,
    encoder_attention_heads=3,
    decoder_attention_heads=3,
    encoder_ffn_dim=96,
    decoder_ffn_dim=80,
    max_position_embeddings=40,
)


def t5_config(**extra):
    return tf.T5Config(
        vocab_size=1000, d_model=48, d_kv=16, d_ff=96, num_layers=3, num_decoder_layers=2,
        num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        decoder_start_token_id=0, **extra,
    )  # fmt: skip


CASES = {
    "t5-v1.0": lambda: tf.T5ForConditionalGeneration(t5_config(feed_forward_proj="relu")),
    "t5-v1.1": lambda: tf.T5ForConditionalGeneration(
        t5_config(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    ),
    "t5-base": lambda: tf.T5Model(t5_config()),
    "bart": lambda: tf.BartForConditionalGeneration(tf.BartConfig(**BART_SIZES)),
    "bart-scaled": lambda: tf.BartForConditionalGeneration(
        tf.BartConfig(**BART_SIZES, scale_embedding=True, activation_function="relu")
    ),
    "bart-base": lambda: tf.BartModel(tf.BartConfig(**BART_SIZES)),
    "pegasus": lambda: tf.PegasusForConditionalGeneration(
        tf.PegasusConfig(**BART_SIZES, scale_embedding=True)
    ),
}


def padded(rows: int, length: int, lengths: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    for row, n in enumerate(lengths):
        mask[row, n:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def untie_and_perturb(hf) -> None:
    """Give untied heads and zero-initialised buffers values of their own, so a lost tensor shows."""
    with torch.no_grad():
        if hasattr(hf, "lm_head") and hf.lm_head.weight is not hf.get_input_embeddings().weight:
            hf.lm_head.weight.normal_(std=0.05)
        if hasattr(hf, "final_logits_bias"):
            hf.final_logits_bias.normal_()


@pytest.mark.parametrize("case", list(CASES))
def test_hf_parity_and_bit_exact_round_trip(tmp_path, case):
    torch.manual_seed(0)
    hf = CASES[case]().eval()
    if case == "t5-v1.1":  # HF builds T5 tied; a v1.1 checkpoint has its own lm_head
        hf.lm_head.weight = torch.nn.Parameter(torch.empty(1000, 48))
    untie_and_perturb(hf)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    assert ours.config.decoder is not None and ours.config.decoder.num_layers == 2
    lm = ours.targets["seq2seq_lm"] if "seq2seq_lm" in ours.targets else None
    if lm is not None:
        tied = lm.decoder.weight is ours.embedding.word_weight
        assert tied == (case != "t5-v1.1")

    src, src_mask = padded(3, 13, [13, 9, 4], seed=1)
    tgt, tgt_mask = padded(3, 11, [11, 6, 8], seed=2)
    keep, tgt_keep = src_mask.bool(), tgt_mask.bool()
    with torch.no_grad():
        expected = hf(
            input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
            decoder_attention_mask=tgt_mask, output_hidden_states=True,
        )  # fmt: skip
        got = ours(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    encoder_diff = (expected.encoder_last_hidden_state - got.encoder_hidden_states)[keep]
    assert encoder_diff.abs().max().item() <= 1e-5
    decoder_hidden = expected.decoder_hidden_states[-1]
    assert (decoder_hidden - got.hidden_states)[tgt_keep].abs().max().item() <= 1e-5
    if lm is not None:
        assert (expected.logits - got.logits)[tgt_keep].abs().max().item() <= 1e-5
        # Labels alone: the decoder input is built the same way (shift right, -100 → pad).
        labels = tgt.masked_fill(~tgt_keep, -100)
        with torch.no_grad():
            hf_loss = hf(input_ids=src, attention_mask=src_mask, labels=labels).loss
            our_loss = ours(src, src_mask, labels=labels).loss
        assert our_loss.item() == pytest.approx(hf_loss.item(), abs=1e-5)

    auto = tf.AutoModelForSeq2SeqLM if lm is not None else tf.AutoModel
    again = export_bit_exact(tmp_path / "ours", tmp_path, hf, auto)
    with torch.no_grad():
        again_out = again(
            input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
            decoder_attention_mask=tgt_mask,
        )  # fmt: skip
    name = "logits" if lm is not None else "last_hidden_state"
    assert torch.equal(getattr(again_out, name)[tgt_keep], getattr(expected, name)[tgt_keep])


@pytest.mark.parametrize(
    ("tie_word_embeddings", "own_head"),
    [(False, False), (False, True), (True, True), (True, False)],
    ids=["v1.1-built-tied", "v1.1", "v1.0-fine-tuned-apart", "v1.0"],
)
def test_t5_ties_and_scales_as_transformers_reads_them(tmp_path, tie_word_embeddings, own_head):
    # transformers 5 ties T5's LM head unless the file holds one of its own and reads the v1.0
    # scaling from scale_decoder_outputs: a T5 v1.1 built from a config (gated-gelu,
    # tie_word_embeddings: false, 2 + 1 layers) is tied and unscaled, which export refused.
    torch.manual_seed(0)
    config = tf.T5Config(
        vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1,
        num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=tie_word_embeddings,
        decoder_start_token_id=0, relative_attention_num_buckets=8,
    )  # fmt: skip
    hf = tf.T5ForConditionalGeneration(config).eval()
    if own_head:
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(1000, 32) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    lm = ours.targets["seq2seq_lm"]
    assert (lm.decoder.weight is ours.embedding.word_weight) == (not own_head)
    assert lm.scale == (32**-0.5 if tie_word_embeddings else 1.0)
    src, src_mask = padded(2, 7, [7, 4], seed=1)
    tgt, tgt_mask = padded(2, 5, [5, 3], seed=2)
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits
        got = ours(src, src_mask, decoder_input_ids=tgt).logits
    assert (expected - got).abs().max().item() <= 1e-5

    again = export_bit_exact(tmp_path / "ours", tmp_path, hf, tf.AutoModelForSeq2SeqLM)
    assert again.config.scale_decoder_outputs == tie_word_embeddings
    with torch.no_grad():
        assert torch.equal(
            again(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).logits, expected
        )


GENERATORS = {
    "t5": lambda: tf.T5ForConditionalGeneration(
        t5_config(feed_forward_proj="gated-gelu", initializer_factor=3.0)
    ),
    "bart": lambda: tf.BartForConditionalGeneration(tf.BartConfig(**BART_SIZES, init_std=0.1)),
    "pegasus": lambda: tf.PegasusForConditionalGeneration(
        tf.PegasusConfig(**BART_SIZES, init_std=0.3, scale_embedding=True)
    ),
}
# Nothing forced: both sides run exactly max_new_tokens steps from the decoder start id.
FREE = dict(eos_token_id=None, forced_eos_token_id=None, forced_bos_token_id=None, min_length=0)


@pytest.mark.parametrize("family", list(GENERATORS))
def test_generation_matches_transformers_generate(tmp_path, family):
    torch.manual_seed(0)
    hf = GENERATORS[family]().eval()
    if family != "t5":
        # A random BART or PEGASUS repeats its first token forever (each hidden state is closest to its
        # own input embedding in the tied head); small word vectors and a strong pull from the
        # encoder make every step, and every prompt, differ.
        with torch.no_grad():
            hf.model.shared.weight.normal_(std=0.05)
            for layer in hf.model.decoder.layers:
                layer.encoder_attn.v_proj.weight.normal_(std=1.0)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    prompts = torch.randint(5, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    outputs = []
    for prompt in prompts:
        expected = hf.generate(
            prompt[None], attention_mask=torch.ones(1, 9, dtype=torch.long), max_new_tokens=12,
            do_sample=False, num_beams=1, **FREE,
        )[0, 1:].tolist()  # fmt: skip
        assert generate(ours, prompt[None], max_new_tokens=12) == [expected]
        assert generate(ours, prompt[None], max_new_tokens=12, use_cache=False) == [expected]
        outputs.append(expected)
    # A degenerate repetition would prove little; and the encoder's input must matter.
    assert len(set(outputs[0] + outputs[1])) >= 4 and outputs[0] != outputs[1]
    beams = hf.generate(
        prompts[1:, :5], max_new_tokens=8, num_beams=3, do_sample=False, early_stopping=False,
        **FREE,
    )[0, 1:].tolist()  # fmt: skip
    # Prompts of different lengths batch as they run alone (right-padded, masked).
    rows = [prompts[0].tolist(), prompts[1, :5].tolist()]
    assert generate(ours, rows, max_new_tokens=8, strategy="beam", num_beams=3)[1] == beams
    batched = generate(ours, rows, max_new_tokens=8)
    assert batched == [generate(ours, [row], max_new_tokens=8)[0] for row in rows]


def test_missing_decoder_tensor_and_wrong_cross_attention_shape_are_named(tmp_path):
    gone = "model.decoder.layers.1.encoder_attn.k_proj.bias"
    shaped = "model.decoder.layers.0.encoder_attn.q_proj.weight"

    def change(state):
        state.pop(gone)
        state[shaped] = torch.zeros(48, 40)

    hf = tf.BartForConditionalGeneration(tf.BartConfig(**BART_SIZES))
    message = broken_checkpoint_error(tmp_path, hf, change)
    assert gone in message
    assert f"{shaped}: file (48, 40) vs decoder.layers.0.cross_attention.query.weight" in message


def test_unsupported_seq2seq_heads_are_refused(tmp_path):
    tf.BartForSequenceClassification(tf.BartConfig(**BART_SIZES)).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="BartForSequenceClassification is not supported"):
        convert_from_hf(tmp_path / "hf", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_export_refuses_what_t5_cannot_compute(tmp_path):
    torch.manual_seed(0)
    tf.T5ForConditionalGeneration(t5_config()).save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours"))
    config = ours.config.to_dict()
    config["decoder"]["ffn_size"] = 64  # T5 has one d_ff for both stacks
    changed = pretrainkit.build_model(config)
    changed.save(tmp_path / "changed")
    with pytest.raises(CheckpointError, match=r"decoder.ffn_size is 64, t5 needs 96"):
        convert_to_hf(tmp_path / "changed", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def seq2seq_config(**extra) -> dict:
    stack = dict(num_layers=1, num_heads=2, ffn_size=64, norm_position="pre", dropout=0.0,
                 attention_dropout=0.0, norm="rmsnorm", bias=False)  # fmt: skip
    embedding = dict(parts=["word", "position"], layer_norm=False, dropout=0.0, max_positions=32)
    return {
        "vocab_size": 20, "hidden_size": 32, "embedding": embedding, "encoder": stack,
        "tgt_embedding": embedding, "decoder": {**stack, "start_id": 0, "pad_id": 0},
        "targets": [{"name": "seq2seq_lm"}], **extra,
    }  # fmt: skip


def test_seq2seq_config_errors_name_the_key():
    config = seq2seq_config()
    del config["tgt_embedding"]
    with pytest.raises(ConfigError, match="decoder is set but tgt_embedding is not"):
        ModelConfig.from_dict(config)
    bad = seq2seq_config()
    bad["decoder"]["causal"] = False
    with pytest.raises(ConfigError, match="decoder.causal"):
        ModelConfig.from_dict(bad)
    with pytest.raises(ValueError, match="decoder_input_ids or labels"):
        pretrainkit.build_model(seq2seq_config())(torch.ones(1, 3, dtype=torch.long))


def test_a_small_seq2seq_model_learns_to_reverse_and_generates_it():
    # Reverse 5 tokens: impossible without cross-attention, easy with it.
    torch.manual_seed(0)
    model = pretrainkit.build_model(seq2seq_config())
    assert model.tgt_embedding.parts["word"].weight is model.embedding.word_weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        src = torch.randint(3, 20, (32, 5), generator=g)
        loss = model(src, labels=src.flip(1)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.25 * sum(losses[:10]) / 10
    test = torch.randint(3, 20, (50, 5), generator=g)
    out = torch.tensor(generate(model.eval(), test, max_new_tokens=5))
    assert (out == test.flip(1)).float().mean().item() >= 0.9


def test_cli_generate_with_an_encoder_decoder_copies_what_it_learned(tmp_path, capsys):
    from helpers import invoke

    from pretrainkit.tokenization import train_tokenizer

    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "hill", "red", "big"]
    g = torch.Generator().manual_seed(0)
    lines = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (5,), generator=g))
        for _ in range(300)
    ]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    tok = train_tokenizer([tmp_path / "corpus.txt"], "wordpiece", 60, tmp_path / "tok")
    torch.manual_seed(0)
    model = pretrainkit.build_model(seq2seq_config(vocab_size=tok.vocab_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(300):  # copy a sentence: the encoder reads the template, the decoder writes
        batch = [lines[(step * 16 + k) % len(lines)] for k in range(16)]
        ids = [tok.encode(text) for text in batch]
        width = max(len(row) for row in ids) + 2
        src = torch.full((16, width), tok.pad_id)
        src_mask = torch.zeros_like(src)
        labels = torch.full((16, width - 1), -100)
        for row, token_ids in enumerate(ids):
            inputs = tok.build_inputs(token_ids)[0]
            src[row, : len(inputs)], src_mask[row, : len(inputs)] = torch.tensor(inputs), 1
            target = [*token_ids, tok.eos_id]
            labels[row, : len(target)] = torch.tensor(target)
        loss = model(src, src_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.tokenizer = tok
    model.eval().save(tmp_path / "model")
    code, out, err = invoke(
        capsys, "generate", "--model", tmp_path / "model", "--prompt", "the red cat sat on",
        "--max-new-tokens", "10",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "the red cat sat on"


def test_sentence_embeddings_of_an_encoder_decoder_read_its_encoder():
    torch.manual_seed(0)
    model = pretrainkit.build_model(seq2seq_config()).eval()

    class Words:  # the smallest tokenizer encode() needs
        pad_id = 0

        def encode_batch(self, texts):
            return [[3 + len(word) for word in text.split()] for text in texts]

        def build_inputs(self, ids, max_length=None):
            return ids[:max_length], [0] * len(ids[:max_length])

    model.tokenizer = Words()
    got = model.encode(["a bb ccc", "dddd"], pooling="mean")
    with torch.no_grad():
        hidden = model.encoder_states(torch.tensor([[4, 5, 6]]))
    assert got.shape == (2, 32)
    assert abs(got[0] - hidden[0].mean(0).numpy()).max() <= 1e-6
