"""The seam between the trainer and distributed backends: options, checks and the rank helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrainkit.distributed import (
    STRATEGIES,
    Engine,
    ParallelConfig,
    check_strategy,
    is_main_process,
    parallelize,
    rank,
    resolve_batch_size,
    world_size,
)
from pretrainkit.distributed import config as config_module
from pretrainkit.distributed.zero import deepspeed_config
from pretrainkit.errors import ConfigError
from pretrainkit.training import TrainConfig


def test_single_trains_the_model_itself(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = nn.Linear(2, 2)
    engine = parallelize(model, "single")
    assert isinstance(engine, Engine) and engine.module is model and engine.model is model


def test_unknown_strategy_lists_choices_and_suggests():
    with pytest.raises(
        ConfigError, match=r"unknown strategy 'fsdb' \(did you mean 'fsdp'\?\)"
    ) as info:
        parallelize(nn.Linear(2, 2), "fsdb")
    assert "single, ddp, fsdp, deepspeed" in str(info.value)
    assert STRATEGIES == ("single", "ddp", "fsdp", "deepspeed")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "ddp", "zero_stage": 2}, "zero_stage=2 applies to strategy 'deepspeed' only"),
        ({"strategy": "deepspeed", "zero_stage": 4}, "zero_stage must be 1, 2 or 3"),
        ({"strategy": "ddp", "cpu_offload": True}, "cpu_offload needs strategy 'fsdp' or"),
        ({"strategy": "fsdp", "activation_checkpointing": "yes"}, "must be true or false"),
    ],
)
def test_options_that_do_not_apply_are_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        ParallelConfig(**options)


def test_deepspeed_options_without_deepspeed_installed(monkeypatch):
    monkeypatch.setattr(config_module, "deepspeed_installed", lambda: False)
    with pytest.raises(ConfigError, match="needs the deepspeed package.*pip install deepspeed"):
        ParallelConfig(strategy="deepspeed", zero_stage=2)


def test_cpu_offload_of_a_cpu_model_is_refused():
    with pytest.raises(ConfigError, match="model is in CPU memory already"):
        check_strategy(ParallelConfig("fsdp", cpu_offload=True), torch.device("cpu"))


@pytest.mark.parametrize(
    ("batch", "global_batch", "accumulate", "world", "expected"),
    [(None, None, 1, 1, 32), (8, None, 2, 2, 8), (None, 16, 2, 2, 4), (4, 16, 2, 2, 4)],
)
def test_batch_size_from_the_global_batch(batch, global_batch, accumulate, world, expected):
    assert resolve_batch_size(batch, global_batch, accumulate, world) == expected


def test_global_batch_that_the_processes_do_not_divide():
    with pytest.raises(ConfigError, match="global_batch_size 10 is not divisible by world size 4"):
        resolve_batch_size(None, 10, 1, 4)
    with pytest.raises(ConfigError, match="batch_size 8 contradicts global_batch_size 16"):
        resolve_batch_size(8, 16, 1, 4)


def test_generated_deepspeed_config():
    train = TrainConfig(steps=10, accumulate=2, clip_grad=0.5)
    config = deepspeed_config(train, micro_batch=4, world=8, stage=3, cpu_offload=True)
    assert config["train_batch_size"] == 4 * 2 * 8
    assert config["gradient_accumulation_steps"] == 2
    assert config["gradient_clipping"] == 0.5
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "bf16" not in config and "fp16" not in config  # autocast stays the loop's


def test_rank_helpers_default_to_one_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (rank(), world_size(), is_main_process()) == (0, 1, True)


def test_rank_helpers_read_the_launcher_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (rank(), world_size(), is_main_process()) == (3, 4, False)
    with pytest.raises(ConfigError, match="launched with 4 processes"):
        parallelize(nn.Linear(2, 2), "single")
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(ConfigError, match="RANK='zero' is not an integer"):
        rank()
