"""A HF folder is data (DESIGN.md §7): paths written in its files stay inside it, damaged
weights are a CheckpointError naming the file, nothing in it runs, and a missing folder says that
there is no model hub behind ``convert``. Nothing is written to the output in any of these cases.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import struct

import pytest
import torch
from helpers import require  # noqa: E402
from safetensors.torch import load_file, save_file

from pretrainkit.convert import FAMILIES, convert_from_hf, family_names
from pretrainkit.errors import CheckpointError

tf = require("transformers")

ST = "sentence_transformers.models."


@pytest.fixture
def folder(tmp_path):
    """A tiny HF BertModel folder (single model.safetensors) and its tensors."""
    config = tf.BertConfig(
        vocab_size=50, hidden_size=16, num_attention_heads=2, num_hidden_layers=1,
        intermediate_size=24, max_position_embeddings=12,
    )  # fmt: skip
    tf.BertModel(config).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def refused(source, out, pattern: str) -> str:
    with pytest.raises(CheckpointError, match=pattern) as info:
        convert_from_hf(source, out)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    return str(info.value)


def shard(folder, outside_name: str) -> None:
    """Split the weights into a shard inside the folder and one named ``outside_name``."""
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    save_file({k: state[k] for k in names[:half]}, str(folder / "model-1.safetensors"))
    target = (folder / outside_name) if not os.path.isabs(outside_name) else None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: state[k] for k in names[half:]}, str(target))
    weight_map = {k: "model-1.safetensors" for k in names[:half]}
    weight_map.update({k: outside_name for k in names[half:]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("outside", ["../outside/x.safetensors", "sub/../../x.safetensors"])
def test_a_sharded_index_pointing_outside_the_folder_is_refused(folder, tmp_path, outside):
    shard(folder, outside)  # the outside file exists and is valid: only the rule stops it
    assert (folder / outside).is_file()
    message = refused(folder, tmp_path / "out", "points outside its folder")
    assert str(folder / "model.safetensors.index.json") in message
    assert repr(outside) in message


def test_an_absolute_shard_path_is_refused(folder, tmp_path):
    shard(folder, str(tmp_path / "abs.safetensors"))
    message = refused(folder, tmp_path / "out", "points outside its folder")
    assert repr(str(tmp_path / "abs.safetensors")) in message


def test_a_sharded_folder_inside_converts(folder, tmp_path):
    expected = load_file(str(folder / "model.safetensors"))
    shard(folder, "parts/model-2.safetensors")
    convert_from_hf(folder, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert len(expected) > 2


def test_an_index_naming_a_tensor_no_shard_holds_is_refused(folder, tmp_path):
    shard(folder, "model-2.safetensors")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["encoder.extra.weight"] = "model-1.safetensors"
    index.write_text(json.dumps(data))
    refused(folder, tmp_path / "out", r"in none of its shards: \['encoder.extra.weight'\]")


@pytest.mark.parametrize(
    ("module", "path"),
    [("Pooling", "../../../../etc"), ("Pooling", "/etc"), ("Transformer", "../elsewhere")],
)
def test_a_sentence_transformers_path_outside_the_folder_is_refused(folder, tmp_path, module, path):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": ST + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST + "Pooling"},
    ]
    modules[0 if module == "Transformer" else 1]["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "elsewhere").mkdir()
    message = refused(folder, tmp_path / "out", "points outside its folder")
    assert f"{folder / 'modules.json'}: the path {path!r}" in message


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path):
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                     .to(torch.uint8).numpy().tobytes())  # fmt: skip


def _absurd_header(path):
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**60) + data[8:])


DAMAGE = {"truncated": _truncated, "random-bytes": _random_bytes, "absurd-header": _absurd_header}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_safetensors_weights_are_named(folder, tmp_path, damage):
    DAMAGE[damage](folder / "model.safetensors")
    message = refused(folder, tmp_path / "out", "not a valid safetensors file")
    assert message.startswith(f"{folder / 'model.safetensors'}: ")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_shard_is_named(folder, tmp_path, damage):
    shard(folder, "model-2.safetensors")
    DAMAGE[damage](folder / "model-2.safetensors")
    message = refused(folder, tmp_path / "out", "not a valid safetensors file")
    assert message.startswith(f"{folder / 'model-2.safetensors'}: ")


def test_a_missing_shard_is_named(folder, tmp_path):
    shard(folder, "model-2.safetensors")
    (folder / "model-2.safetensors").unlink()
    refused(folder, tmp_path / "out", re.escape(f"{folder / 'model-2.safetensors'}: "))


def to_bin(folder) -> None:
    """model.safetensors → pytorch_model.bin (as torch.save writes it)."""
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file if unpickled


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("damage", ["truncated", "random-bytes", "plain-pickle", "code"])
def test_damaged_pytorch_weights_are_named(folder, tmp_path, damage):
    to_bin(folder)
    path = folder / "pytorch_model.bin"
    marker = tmp_path / "ran"
    if damage == "truncated":
        _truncated(path)
    elif damage == "random-bytes":
        _random_bytes(path)
    elif damage == "plain-pickle":  # not torch's zip format at all
        path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    else:
        torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, path)
    message = refused(folder, tmp_path / "out", "not a valid PyTorch weights file")
    assert message.startswith(f"{path}: ")
    assert "weights_only" not in message  # torch's advice to run the file's code is dropped
    if damage == "code":
        assert "Unsupported global: GLOBAL io.open" in message
    assert not marker.exists()


def test_a_pytorch_file_of_other_things_than_tensors_is_named(folder, tmp_path):
    to_bin(folder)
    torch.save({"step": 3, "weight": torch.zeros(2)}, folder / "pytorch_model.bin")
    refused(
        folder, tmp_path / "out", r"pytorch_model.bin: entries that are not tensors: \['step'\]"
    )


def test_pytorch_weights_convert(folder, tmp_path):
    expected = load_file(str(folder / "model.safetensors"))
    to_bin(folder)
    convert_from_hf(folder, tmp_path / "out")
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    word = "embedding.parts.word.weight"
    assert torch.equal(got[word], expected["embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("name", ["gpt2", "bert-base-uncased", "org/name"])
def test_a_hub_name_is_told_there_is_no_hub(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        convert_from_hf(name, tmp_path / "out")
    assert str(info.value) == (
        f"{name}: no such folder; convert reads a local HuggingFace model folder (config.json + "
        "weights) — there is no model hub access; download the folder elsewhere and pass its path"
    )
    assert not (tmp_path / "out").exists()


def test_a_file_given_as_the_folder_is_named(folder, tmp_path):
    refused(folder / "config.json", tmp_path / "out", "config.json: is a file")


def test_family_names_are_the_registered_model_types():
    names = family_names()
    assert names == sorted(FAMILIES.names())
    assert names == [
        "albert", "bart", "bert", "gpt2", "llama", "pegasus", "roberta", "speech_to_text", "t5",
        "vit", "xlm-roberta",
    ]  # fmt: skip


def test_import_refuses_what_export_could_not_write_back(folder, tmp_path, monkeypatch):
    # Import and export must agree: a config the family cannot write back is refused on the
    # way in, with the family's reason, instead of failing later in convert --to-hf.
    def cannot(config):
        raise CheckpointError("encoder.thing is 'x', bert needs 'y'")

    bert = FAMILIES.get("bert")
    # The registry has no way to replace an entry; the test swaps it for its duration.
    monkeypatch.setitem(FAMILIES._entries, "bert", dataclasses.replace(bert, config_to_hf=cannot))
    message = refused(folder, tmp_path / "out", "could not be written back to HF")
    assert "encoder.thing is 'x', bert needs 'y'" in message


def test_a_roberta_without_a_padding_id_is_refused(tmp_path):
    # RoBERTa counts positions from its padding id: without one there is no way to number them.
    config = tf.RobertaConfig(
        vocab_size=50, hidden_size=16, num_attention_heads=2, num_hidden_layers=1,
        intermediate_size=24, max_position_embeddings=12,
    )  # fmt: skip
    tf.RobertaModel(config).save_pretrained(tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**written, "pad_token_id": None}))
    refused(tmp_path / "hf", tmp_path / "out", "pad_token_id None: roberta counts positions")
