import pytest

import pretrainkit
from pretrainkit.config import ModelConfig, load_model_config
from pretrainkit.errors import ConfigError

TINY = {
    "vocab_size": 100,
    "hidden_size": 32,
    "encoder": {"num_layers": 1, "num_heads": 2, "ffn_size": 64},
}


def test_misspelt_key_is_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'num_layer'.*did you mean 'num_layers'"):
        ModelConfig.from_dict({**TINY, "encoder": {"num_layer": 2}})
    with pytest.raises(ConfigError, match=r"did you mean 'hidden_size'"):
        ModelConfig.from_dict({**TINY, "hiden_size": 3})


def test_unknown_module_names_list_choices():
    with pytest.raises(ConfigError, match=r"activation: 'gleu'.*did you mean 'gelu'"):
        ModelConfig.from_dict({**TINY, "encoder": {"activation": "gleu"}})
    with pytest.raises(
        ConfigError, match=r"unknown target 'mml'.*did you mean 'mlm'.*classification"
    ):
        pretrainkit.build_model({**TINY, "targets": [{"name": "mml"}]})
    with pytest.raises(ConfigError, match=r"unknown embedding part 'wrd'.*did you mean 'word'"):
        pretrainkit.build_model({**TINY, "embedding": {"parts": ["wrd"]}})
    with pytest.raises(ConfigError, match=r"unknown option 'poling'.*did you mean 'pooling'"):
        pretrainkit.build_model(
            {
                **TINY,
                "targets": [{"name": "classification", "labels": ["a", "b"], "poling": "mean"}],
            }
        )


def test_values_are_type_and_range_checked():
    with pytest.raises(ConfigError, match="expected an integer"):
        ModelConfig.from_dict({**TINY, "hidden_size": "big"})
    with pytest.raises(ConfigError, match="num_kv_heads"):
        ModelConfig.from_dict({**TINY, "encoder": {"num_heads": 4, "num_kv_heads": 3}})
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig.from_dict({**TINY, "embedding": {"dropout": 1.5}})
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig.from_dict({**TINY, "hidden_size": 33})


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("encoder", {"rotary_base": 0.0}, r"rotary_base: 0\.0 is outside \[1\.0, inf\]"),
        ("encoder", {"relative_buckets": 0}, r"relative_buckets: 0 is outside \[1, inf\]"),
        ("encoder", {"norm_eps": -1e-5}, r"norm_eps: -1e-05 is outside \[0\.0, inf\]"),
        ("encoder", {"attention_scale": float("inf")}, r"attention_scale: inf is not a finite"),
        ("embedding", {"num_segments": 0}, r"num_segments: 0 is outside \[1, inf\]"),
        ("embedding", {"dropout": float("nan")}, r"dropout: nan is not a finite number"),
        (
            "embedding",
            {"parts": ["patch"], "image_size": -16, "patch_size": 8},
            r"image_size: -16 is outside \[1, inf\]",
        ),
    ],
)
def test_non_finite_and_out_of_range_values(section, values, message):
    base = TINY[section] if section in TINY else {}
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({**TINY, section: {**base, **values}})


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'bert-tiny'"):
        load_model_config("bert-tiyn")


def test_yaml_round_trip_and_overrides(tmp_path):
    config = load_model_config("bert-tiny", {"encoder.num_layers": 1, "vocab_size": 500})
    assert config.encoder.num_layers == 1 and config.vocab_size == 500
    config.save(tmp_path / "c.yaml")
    again = load_model_config(tmp_path / "c.yaml")
    assert again == config
    assert [t.name for t in again.targets] == ["mlm", "nsp"]


@pytest.mark.parametrize(("text", "value"), [("1e-4", 1e-4), ("3E-5", 3e-5), (" 2e3 ", 2000.0)])
def test_yaml_1_1_exponents_read_as_numbers(text, value) -> None:
    # PyYAML (YAML 1.1) reads `lr: 1e-4` as the string "1e-4": a float field takes it as 1e-4.
    from pretrainkit.config.typed import coerce, load_yaml

    assert load_yaml("lr: 1e-4", "x")["lr"] == "1e-4"
    assert coerce(text, float, "lr") == value


@pytest.mark.parametrize("text", ["fast", "nan", "inf", "1e", "1,5", ""])
def test_other_strings_are_not_numbers(text) -> None:
    from pretrainkit.config.typed import coerce

    with pytest.raises(ConfigError, match="expected a number"):
        coerce(text, float, "lr")
