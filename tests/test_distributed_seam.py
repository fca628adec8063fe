"""The seam between the trainer and distributed backends: parallelize and the rank helpers."""

from __future__ import annotations

import pytest
from torch import nn

from pretrainkit.distributed import STRATEGIES, is_main_process, parallelize, rank, world_size
from pretrainkit.errors import ConfigError


def test_single_returns_the_model_itself(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = nn.Linear(2, 2)
    assert parallelize(model, "single") is model


def test_unknown_strategy_lists_choices_and_suggests():
    with pytest.raises(
        ConfigError, match=r"unknown strategy 'fsdb' \(did you mean 'fsdp'\?\)"
    ) as info:
        parallelize(nn.Linear(2, 2), "fsdb")
    assert "single, ddp, fsdp, deepspeed" in str(info.value)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "single"])
def test_scale_out_strategies_are_not_implemented_yet(strategy):
    with pytest.raises(ConfigError, match="not implemented yet.*scale-out work"):
        parallelize(nn.Linear(2, 2), strategy)


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
