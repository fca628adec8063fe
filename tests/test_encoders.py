"""Encoders besides the transformer: LSTM, GRU (uni/bidirectional, packed) and the gated CNN,
and the per-encoder config that checks each one's options."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
import torch
from torch import Tensor

import pretrainkit
from pretrainkit.config import ModelConfig
from pretrainkit.config.encoder_options import ENCODER_OPTIONS, EncoderConfig, EncoderOptionError
from pretrainkit.encoders import ENCODERS, GatedCNNEncoder, RecurrentEncoder
from pretrainkit.errors import ConfigError
from pretrainkit.training import TrainConfig, Trainer
from tests.helpers import QUIET, cli, invoke, last_json, write_classification, write_corpus

HIDDEN = 32
VOCAB = 24
RECURRENT = [
    {"name": "lstm", "num_layers": 2},
    {"name": "lstm", "num_layers": 2, "bidirectional": True},
    {"name": "gru", "num_layers": 2},
    {"name": "gru", "num_layers": 2, "bidirectional": True},
]
EVERY = [*RECURRENT, {"name": "gatedcnn", "num_layers": 3}, {"name": "gatedcnn", "causal": True}]


def tiny(encoder: dict, **extra) -> dict:
    return {
        "hidden_size": HIDDEN,
        "vocab_size": VOCAB,
        "embedding": {"parts": ["word"], "max_positions": 32, "dropout": 0.0},
        "encoder": {**encoder, "dropout": 0.0},
        **extra,
    }


def encoder(spec: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pretrainkit.build_model(tiny(spec)).encoder.eval()


def label(spec: dict) -> str:
    return "-".join(str(v) for v in spec.values())


# -- recurrent: packing, width, direction ---------------------------------------------------


@pytest.mark.parametrize("spec", RECURRENT, ids=label)
def test_padding_never_changes_real_positions_of_a_recurrent_stack(spec):
    stack = encoder(spec)
    torch.manual_seed(1)
    x = torch.randn(3, 9, HIDDEN)  # [b, s, h]
    lengths = [9, 5, 2]
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        padded = stack(x, mask)
        # More padding behind every row: the same packed batch, so bit for bit the same.
        longer = torch.cat((x, torch.randn(3, 4, HIDDEN)), dim=1)
        longer_mask = torch.cat((mask, torch.zeros(3, 4, dtype=torch.long)), dim=1)
        assert torch.equal(stack(longer, longer_mask)[:, :9], padded)
        for row, length in enumerate(lengths):
            alone = stack(x[row : row + 1, :length])  # no padding, no mask
            torch.testing.assert_close(padded[row, :length], alone[0], rtol=0, atol=1e-6)
            assert torch.equal(padded[row, length:], torch.zeros_like(padded[row, length:]))


@pytest.mark.parametrize("spec", RECURRENT, ids=label)
def test_recurrent_width_and_direction(spec):
    stack = encoder(spec)
    assert isinstance(stack, RecurrentEncoder)
    bidirectional = spec.get("bidirectional", False)
    for layer in stack.recurrent:
        assert layer.hidden_size == (HIDDEN // 2 if bidirectional else HIDDEN)
        assert layer.bidirectional == bidirectional
    x = torch.randn(2, 6, HIDDEN)
    changed = x.clone()
    changed[:, 4:] += 1.0  # only the future of positions 0-3
    with torch.no_grad():
        out, out_changed = stack(x), stack(changed)
        layers = stack.layer_outputs(x)
        first_changed = stack.layer_outputs(changed)[0]
    assert out.shape == (2, 6, HIDDEN)
    assert len(layers) == 2 and torch.equal(layers[-1], out)
    if bidirectional:  # in the first layer the backward half sees the future, the forward not
        half = HIDDEN // 2
        first = layers[0]
        assert torch.equal(first[:, :4, :half], first_changed[:, :4, :half])
        assert not torch.allclose(first[:, :4, half:], first_changed[:, :4, half:])
        assert not torch.allclose(out[:, :4], out_changed[:, :4])
    else:  # uni-directional: causal
        assert torch.equal(out[:, :4], out_changed[:, :4])


def test_an_empty_row_and_a_left_padded_mask():
    stack = encoder(RECURRENT[1])
    x = torch.randn(2, 5, HIDDEN)
    with torch.no_grad():
        out = stack(x, torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]))
    assert torch.equal(out[1], torch.zeros(5, HIDDEN)) and out[0, :3].abs().sum() > 0
    with pytest.raises(ValueError, match="right-padded"):
        stack(x, torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))


# -- gated CNN -------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_gated_cnn_ignores_padding_and_is_causal_when_asked(causal):
    stack = encoder({"name": "gatedcnn", "num_layers": 3, "block_size": 2, "causal": causal})
    assert isinstance(stack, GatedCNNEncoder)
    torch.manual_seed(2)
    x = torch.randn(2, 6, HIDDEN)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        padded = stack(x, mask)
        # Garbage in the padding, and more of it: real positions see the same zeros.
        noisy = torch.cat((x, torch.randn(2, 5, HIDDEN)), dim=1)
        noisy[1, 3:] = 100.0
        noisy_mask = torch.cat((mask, torch.zeros(2, 5, dtype=torch.long)), dim=1)
        again = stack(noisy, noisy_mask)
        alone = stack(x[1:, :3])
        torch.testing.assert_close(again[:, :6], padded, rtol=0, atol=1e-6)
        torch.testing.assert_close(padded[1, :3], alone[0], rtol=0, atol=1e-6)
        assert torch.equal(padded[1, 3:], torch.zeros(3, HIDDEN))
        changed = x.clone()
        changed[:, 4:] -= 1.0
        future = stack(changed)[:, :4]
        same = torch.allclose(future, stack(x)[:, :4], rtol=0, atol=1e-6)
    assert same == causal  # a centred window of 3, stacked 3 deep, reaches 3 positions ahead
    assert len(stack.layer_outputs(x)) == 3


# -- the per-encoder config -------------------------------------------------------------


def test_every_encoder_builder_takes_exactly_its_options():
    assert sorted(ENCODER_OPTIONS) == ENCODERS.names()
    for name, options in ENCODER_OPTIONS.items():
        builder = inspect.signature(ENCODERS.get(name)).parameters
        wanted = {f.name for f in fields(options)} - {"name"} | {"hidden_size"}
        required = {p for p, spec in builder.items() if spec.default is inspect.Parameter.empty}
        assert required <= wanted <= set(builder), name


@pytest.mark.parametrize(
    ("encoder_section", "message"),
    [
        ({"name": "lstm", "bidirectinal": True}, "did you mean 'bidirectional'"),
        ({"name": "lstm", "num_heads": 2}, "valid keys: name, num_layers, bidirectional"),
        ({"name": "gru", "num_layers": 0}, "num_layers: 0 is outside"),
        ({"name": "lstn"}, "unknown encoder 'lstn' (did you mean 'lstm'?)"),
        ({"name": "gatedcnn", "kernel_size": 4}, "even; a centred"),
        ({"name": "gatedcnn", "num_layers": 2, "block_size": 3}, "block_size: 3 is outside"),
        ({"name": "transformer", "bidirectional": True}, "unknown key 'bidirectional'"),
    ],
)
def test_bad_encoder_sections_name_the_key(encoder_section, message):
    with pytest.raises(ConfigError, match="encoder") as error:
        ModelConfig.from_dict(tiny(encoder_section))
    assert message in str(error.value)


def test_odd_width_bidirectional_and_switching_a_preset_by_dotted_key():
    with pytest.raises(ConfigError, match=r"hidden_size \(33\) must be even"):
        ModelConfig.from_dict({**tiny({"name": "gru", "bidirectional": True}), "hidden_size": 33})
    with pytest.raises(ConfigError, match="give the whole section"):
        pretrainkit.build_model("bert-tiny", {"encoder.name": "lstm"})
    model = pretrainkit.build_model(
        "bert-tiny", {"encoder": {"name": "lstm"}, "encoder.num_layers": 3}
    )
    assert len(model.encoder.recurrent) == 3
    assert model.config.encoder.name == "lstm"
    # Transformer-only code reading an LSTM's config gets one clear error, not a traceback.
    with pytest.raises(EncoderOptionError, match="'lstm' encoder has no such option"):
        model.config.encoder.num_heads  # noqa: B018
    assert getattr(model.config.encoder, "causal", None) is None
    # The transformer keeps its class and options.
    assert isinstance(pretrainkit.build_model("bert-tiny").config.encoder, EncoderConfig)


@pytest.mark.parametrize("spec", EVERY, ids=label)
def test_save_load_round_trip_gives_identical_outputs(spec, tmp_path):
    torch.manual_seed(0)
    model = pretrainkit.build_model(
        tiny(spec, targets=[{"name": "classification", "labels": ["a", "b"], "pooling": "mean"}])
    ).eval()
    ids = torch.randint(1, VOCAB, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    loaded = pretrainkit.load(model.save(tmp_path / "model")).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)


# -- training --------------------------------------------------------------------------


class CueBatches:
    """Right-padded rows of random tokens; the label is whether token 1 (the cue) occurs."""

    batch_size = 16

    def __init__(self) -> None:
        self.position = 0

    def next_batch(self) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(self.position)
        self.position += 1
        ids = torch.randint(2, VOCAB, (self.batch_size, 10), generator=generator)
        labels = torch.arange(self.batch_size) % 2
        where = torch.randint(0, 5, (self.batch_size,), generator=generator)
        ids[labels == 1, where[labels == 1]] = 1
        lengths = torch.randint(5, 11, (self.batch_size,), generator=generator)
        mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


@pytest.mark.parametrize("spec", EVERY, ids=label)
def test_each_encoder_learns_a_tiny_classifier(spec, tmp_path):
    torch.manual_seed(0)
    head = {"name": "classification", "labels": ["no", "yes"], "pooling": "max"}
    model = pretrainkit.build_model(tiny(spec, targets=[head]))
    config = TrainConfig(
        steps=60, lr=1e-2, warmup=5, precision="fp32", device="cpu", progress=False, log_every=10
    )
    summary = Trainer(model, CueBatches(), config, tmp_path / "run").fit()
    model.eval()
    batch = CueBatches()
    batch.position = 1000  # unseen rows
    held_out = batch.next_batch()
    with torch.no_grad():
        output = model(**held_out)
    assert summary["final_loss"] < 0.35, summary  # from ln 2 = 0.69
    assert output.metrics["accuracy"] >= 0.9


def test_init_finetune_evaluate_a_bilstm_from_the_command_line(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", documents=40, reviews=True)
    write_classification(tmp_path / "train.tsv", rows=192, seed=1)
    write_classification(tmp_path / "dev.tsv", rows=64, seed=2)
    cli(
        "vocab", "--corpus", corpus, "--kind", "wordpiece", "--size", 120, "--out", tmp_path / "tok"
    )
    (tmp_path / "bilstm.yaml").write_text(
        "hidden_size: 32\nembedding: {parts: [word], max_positions: 32}\n"
        "encoder: {name: lstm, num_layers: 1, bidirectional: true}\ntargets: [{name: mlm}]\n"
    )
    cli("init", "--model", tmp_path / "bilstm.yaml", "--tokenizer", tmp_path / "tok",
        "--model.encoder.num_layers", 2, "--out", tmp_path / "init", "--seed", 0)  # fmt: skip
    cli("finetune", "--model", tmp_path / "init", "--train", tmp_path / "train.tsv",
        "--epochs", 4, "--lr", "3e-3", "--batch-size", 16, "--seed", 0,
        "--out", tmp_path / "run", *QUIET)  # fmt: skip
    code, out, err = invoke(capsys, "evaluate", "--model", tmp_path / "run",
                            "--data", tmp_path / "dev.tsv")  # fmt: skip
    assert code == 0, err
    assert last_json(out)["accuracy"] >= 0.9
    model = pretrainkit.load(tmp_path / "run")
    assert isinstance(model.encoder, RecurrentEncoder) and model.config.encoder.bidirectional
    assert len(model.encoder.recurrent) == 2  # the dotted override on the YAML's 1
