"""ViT ⇄ pretrainkit through the real converter, and the patch embedding on its own.

A tiny HF ViT with random weights and odd sizes (hidden 48, 3 heads, 3 layers, 24x24 images in
8x8 patches) is saved with ``save_pretrained``, converted, compared on random images, converted
back bit for bit and reloaded with transformers' Auto classes.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import require  # noqa: E402
from safetensors.torch import load_file, save_file

import pretrainkit
from pretrainkit.convert import convert_from_hf
from pretrainkit.errors import ConfigError

tf = require("transformers")

from convert_helpers import export_bit_exact  # noqa: E402


def vit_config(**extra):
    return tf.ViTConfig(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
        image_size=24, patch_size=8, num_labels=3, **extra,
    )  # fmt: skip


CASES = {
    "vit-base": (lambda: tf.ViTModel(vit_config()), tf.AutoModel),
    "vit-classifier": (
        lambda: tf.ViTForImageClassification(vit_config()),
        tf.AutoModelForImageClassification,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hf_parity_and_bit_exact_round_trip(tmp_path, case):
    build, auto = CASES[case]
    torch.manual_seed(0)
    hf = build().eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    assert ours.config.embedding.max_positions == 10  # 9 patches + [CLS]
    pixels = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=pixels, output_hidden_states=True)
        got = ours(pixel_values=pixels)
    body = hf.base_model
    with torch.no_grad():
        expected_hidden = body(pixel_values=pixels).last_hidden_state  # after the final norm
    assert (got.hidden_states - expected_hidden).abs().max().item() <= 1e-5
    if auto is not tf.AutoModel:
        assert (got.logits - expected.logits).abs().max().item() <= 1e-5
        assert ours.config.targets[0].options["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]

    again = export_bit_exact(tmp_path / "ours", tmp_path, hf, auto)
    with torch.no_grad():
        again_hidden = again.base_model(pixel_values=pixels).last_hidden_state
    assert torch.equal(again_hidden, expected_hidden)


def test_a_state_dict_with_module_names_converts_too(tmp_path):
    # transformers 5 writes the file names (encoder.layer.{i}.attention.attention.query ...),
    # but its modules say layers.{i}.attention.q_proj; a raw state_dict uses those.
    torch.manual_seed(0)
    hf = tf.ViTForImageClassification(vit_config()).eval()
    hf.save_pretrained(tmp_path / "hf")
    save_file(dict(hf.state_dict()), str(tmp_path / "hf" / "model.safetensors"))
    assert any(".q_proj." in k for k in load_file(str(tmp_path / "hf" / "model.safetensors")))
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    pixels = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert (
            ours(pixel_values=pixels).logits - hf(pixel_values=pixels).logits
        ).abs().max() <= 1e-5


def test_wrong_image_shape_and_patch_config_errors_are_clear():
    config = {
        "hidden_size": 32,
        "embedding": {
            "parts": ["patch", "position"],
            "image_size": 16,
            "patch_size": 8,
            "max_positions": 5,
            "layer_norm": False,
        },  # fmt: skip
        "encoder": {"num_layers": 1, "num_heads": 2, "ffn_size": 64, "norm_position": "pre"},
    }
    model = pretrainkit.build_model(config)
    with pytest.raises(ValueError, match=r"expected pixel values \[batch, 3, 16, 16\]"):
        model(pixel_values=torch.randn(1, 3, 24, 24))
    with pytest.raises(ValueError, match="exactly one of input_ids and pixel_values"):
        model()
    bad = json.loads(json.dumps(config))
    bad["embedding"]["patch_size"] = 5
    with pytest.raises(ConfigError, match="image_size .16. must be a multiple of patch_size .5."):
        pretrainkit.build_model(bad)
    bad["embedding"].update(patch_size=8, max_positions=4)
    with pytest.raises(ConfigError, match=r"max_positions \(4\) < 5"):
        pretrainkit.build_model(bad)
    bad["embedding"].update(max_positions=5, parts=["patch", "word", "position"])
    with pytest.raises(ConfigError, match="exactly one of 'word'"):
        pretrainkit.build_model(bad)


def test_a_small_vit_learns_where_the_bright_quadrant_is():
    # Four classes: which quadrant of a noisy 16x16 image is bright. Needs the patch positions.
    torch.manual_seed(0)
    labels = [f"q{i}" for i in range(4)]
    model = pretrainkit.build_model({
        "hidden_size": 32,
        "embedding": {"parts": ["patch", "position"], "image_size": 16, "patch_size": 4,
                      "max_positions": 17, "layer_norm": False, "dropout": 0.0},
        "encoder": {"num_layers": 1, "num_heads": 2, "ffn_size": 64, "norm_position": "pre",
                    "dropout": 0.0, "attention_dropout": 0.0},
        "targets": [{"name": "classification", "labels": labels, "pooler": False, "dropout": 0.0}],
    })  # fmt: skip
    g = torch.Generator().manual_seed(0)

    def images(n):
        y = torch.randint(0, 4, (n,), generator=g)
        x = torch.randn(n, 3, 16, 16, generator=g) * 0.5
        for i, q in enumerate(y.tolist()):
            r, c = divmod(q, 2)
            x[i, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] += 1.0
        return x, y

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        x, y = images(32)
        loss = model(pixel_values=x, labels=y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = images(200)
    with torch.no_grad():
        accuracy = (model.eval()(pixel_values=x).logits.argmax(-1) == y).float().mean().item()
    assert accuracy >= 0.9  # chance is 0.25
