"""How a pipeline cuts the layer stack into stages (``--pipeline-split params|time``).

``balance_stages`` is pure: given each layer's cost and the first and last stages' extra
(embedding; final norm and targets), it returns consecutive ranges whose slowest stage is as
fast as it can be; checked against brute force over every cut on small cases. The measurement
(``measure_stage_costs``) leaves the model, its gradients and the random number generator as
they were. A 4-layer tiny BERT (dropout off) on 2 processes, cut by measured time under 1F1B
and interleaved (2 stages per process), follows the single-process loss curve.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import (
    NO_DROPOUT_AT_ALL,
    TINY_MODEL,
    cli,
    layout_args,
    layout_refusal,
    layout_shards,
    torchrun,
)
from helpers import run_losses as losses
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from pretrainkit.config import load_model_config
from pretrainkit.distributed.config import ParallelConfig, resolve_microbatches
from pretrainkit.distributed.pipeline_plan import (
    balance_stages,
    check_pipeline,
    measure_stage_costs,
    stage_layers,
)
from pretrainkit.errors import ConfigError
from pretrainkit.model import build_model

TOLERANCE = 1e-3  # relative, per step: the same batch, only the float order differs


def slowest(costs: list[float], ranges: list[range], first: float, last: float) -> float:
    """The costliest stage of a split, summed directly (not as the DP does)."""
    totals = [sum(costs[i] for i in r) for r in ranges]
    totals[0] += first
    totals[-1] += last
    return max(totals)


def brute_force(costs: list[float], stages: int, first: float, last: float) -> float:
    """The least slowest stage over every way to cut ``costs`` into ``stages`` runs."""
    count = len(costs)
    best = float("inf")
    for cuts in itertools.combinations(range(1, count), stages - 1):
        bounds = [0, *cuts, count]
        ranges = [range(a, b) for a, b in itertools.pairwise(bounds)]
        best = min(best, slowest(costs, ranges, first, last))
    return best


def check_ranges(ranges: list[range], count: int, stages: int) -> None:
    assert len(ranges) == stages
    assert ranges[0].start == 0 and ranges[-1].stop == count
    assert all(len(r) >= 1 for r in ranges)
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))


@st.composite
def cases(draw, values):
    costs = draw(st.lists(values, min_size=1, max_size=7))
    stages = draw(st.integers(1, len(costs)))
    return costs, stages, draw(values), draw(values)


@settings(max_examples=300, deadline=None)
@given(cases(st.integers(0, 30)))
def test_split_is_optimal_against_brute_force_exact(case) -> None:
    costs, stages, first, last = case
    ranges = balance_stages(costs, stages, first, last)
    check_ranges(ranges, len(costs), stages)
    assert slowest(costs, ranges, first, last) == brute_force(costs, stages, first, last)


@settings(max_examples=200, deadline=None)
@given(cases(st.floats(0, 1e3, allow_nan=False, allow_infinity=False)))
def test_split_is_optimal_against_brute_force_seconds(case) -> None:
    costs, stages, first, last = case
    ranges = balance_stages(costs, stages, first, last)
    check_ranges(ranges, len(costs), stages)
    best = brute_force(costs, stages, first, last)
    assert slowest(costs, ranges, first, last) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_the_costly_ends_take_fewer_layers() -> None:
    # Four equal layers; targets as costly as two layers: the last stage takes one layer.
    assert balance_stages([1.0] * 4, 2, last=2.0) == [range(0, 3), range(3, 4)]
    # An embedding worth two layers: the first stage takes one.
    assert balance_stages([1.0] * 4, 2, first=2.0) == [range(0, 1), range(1, 4)]
    # Nothing extra: the even split, earlier stages taking more on a tie.
    assert balance_stages([1.0] * 7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    # One slow layer gets a stage to itself.
    assert balance_stages([1.0, 1.0, 5.0, 1.0], 3) == [range(0, 2), range(2, 3), range(3, 4)]


def test_the_parameter_split_is_unchanged() -> None:
    assert stage_layers([10] * 7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert stage_layers([10, 10, 40, 10], 2) == [range(0, 2), range(2, 4)]


@pytest.mark.parametrize(
    ("costs", "stages", "first", "message"),
    [
        ([1.0, 1.0], 3, 0.0, "cannot cut 2 layer(s) into 3"),
        ([1.0, -1.0], 2, 0.0, "finite and ≥ 0"),
        ([1.0, float("nan")], 2, 0.0, "finite and ≥ 0"),
        ([1.0, 1.0], 2, float("inf"), "finite and ≥ 0"),
    ],
)
def test_impossible_splits_are_errors(costs, stages, first, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        balance_stages(costs, stages, first)


def test_bad_split_options_are_config_errors() -> None:
    assert ParallelConfig(pipeline_parallel=2).split == "params"
    assert ParallelConfig(pipeline_parallel=2, pipeline_split="time").split == "time"
    with pytest.raises(ConfigError, match="unknown pipeline_split 'tme'.*did you mean 'time'"):
        ParallelConfig(pipeline_parallel=2, pipeline_split="tme")
    with pytest.raises(ConfigError, match="pipeline_split='time' applies to pipeline"):
        ParallelConfig(pipeline_split="time")


def test_measuring_leaves_the_model_as_it_was() -> None:
    overrides = {
        "hidden_size": 32,
        "encoder.num_heads": 2,
        "encoder.ffn_size": 64,
        "embedding.max_positions": 16,
    }
    torch.manual_seed(0)
    model = build_model(load_model_config("bert-tiny", overrides))
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    costs = measure_stage_costs(model, 2, 16, torch.device("cpu"), "fp32", repeats=2)
    assert sorted(costs) == ["embedding", "head", "layers"]
    assert len(costs["layers"]) == 2
    assert all(t > 0 for t in [costs["embedding"], costs["head"], *costs["layers"]])
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(p.grad is None for p in model.parameters())
    state = model.state_dict()
    assert all(torch.equal(weights[name], state[name]) for name in weights)
    assert type(model.encoder.layers[0]).__name__ == "TransformerBlock"


def test_bad_split_value_is_refused_before_anything_is_written(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    shards = layout_shards(tmp_path, "bert", "shards")
    out = tmp_path / "run"
    extra = ["--pipeline-parallel", "2", "--pipeline-split", "fastest"]
    args = layout_args(shards, out, *extra, model=TINY_MODEL)
    code, err = layout_refusal(capsys, monkeypatch, 2, args)
    assert code == 2 and "unknown pipeline_split 'fastest'" in err, err
    assert not out.exists()


FOUR_LAYERS = [*TINY_MODEL, "--model.encoder.num_layers", "4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer tiny BERT (MLM + NSP, tied decoder): the single-process reference, PP 2
    under 1F1B cut by measured time, and PP 2 interleaved (2 stages per process, 4 in all),
    alone and with TP 2 and sequence parallelism."""
    root = tmp_path_factory.mktemp("split")
    shards = layout_shards(root, "bert", "shards")

    def args(out: Path, *extra: str) -> list[str]:
        return layout_args(shards, out, *extra, model=FOUR_LAYERS, dropout=NO_DROPOUT_AT_ALL)

    cli(*args(root / "single"))
    pp2 = ["--pipeline-parallel", "2"]
    torchrun(2, *args(root / "time", *pp2, "--pipeline-split", "time"), log=root / "time.log")
    interleaved = [*pp2, "--pipeline-schedule", "interleaved", "--stages-per-process", "2"]
    torchrun(2, *args(root / "interleaved", *interleaved), log=root / "interleaved.log")
    # Each of the 4 stages split over 2 tensor-parallel processes (4 processes), the
    # activations between sub-layers along the sequence too: a process's two stages each
    # split their input and gather their output.
    tp2 = [*interleaved, "--tensor-parallel", "2", "--sequence-parallel"]
    torchrun(4, *args(root / "interleaved-tp2", *tp2), log=root / "interleaved-tp2.log")
    return root


def split_line(log: Path) -> str:
    return next(x for x in log.read_text().splitlines() if "pipeline split by" in x)


@pytest.mark.parametrize("run", ["time", "interleaved", "interleaved-tp2"])
def test_pipeline_follows_the_single_process_loss_curve(root: Path, run: str) -> None:
    single, piped = losses(root / "single"), losses(root / run)
    assert sorted(piped) == sorted(single)
    for step, loss in single.items():
        assert piped[step] == pytest.approx(loss, rel=TOLERANCE), step
    assert single[max(single)] < single[1] - 0.5  # it learns
    # The weights gathered from the stages are the single process's (measured ≤ 7e-7).
    expected = load_file(root / "single" / "model" / "model.safetensors")
    got = load_file(root / run / "model" / "model.safetensors")
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-5, msg=name)


def test_time_split_is_logged_and_recorded(root: Path) -> None:
    # Rank 0 logged what it measured and how it cut: two stages over all four layers.
    line = split_line(root / "time.log")
    assert "measured time" in line and "layers 0-" in line and "-3" in line, line
    assert line.count("layers ") == 3, line  # the per-layer costs, then the two stages
    plan = json.loads((root / "time" / "run.json").read_text())
    assert plan["strategy"]["pipeline_split"] == "time"
    split = plan["pipeline_split"]  # the boundaries chosen and the costs they came from
    (a, b), (c, d) = split["stages"]
    assert a == 0 and b == c and d == 4 and 0 < b < 4
    assert len(split["seconds"]["layers"]) == 4 and split["seconds"]["embedding"] > 0


def test_interleaved_cuts_four_stages(root: Path) -> None:
    line = split_line(root / "interleaved.log")
    assert "layers 0-0, layers 1-1, layers 2-2, layers 3-3" in line, line
    plan = json.loads((root / "interleaved" / "run.json").read_text())
    assert plan["strategy"]["pipeline_schedule"] == "interleaved"
    assert plan["microbatches"] == 2


def test_interleaved_options_are_checked() -> None:
    assert ParallelConfig(pipeline_parallel=2, pipeline_schedule="interleaved").virtual_stages == 2
    assert ParallelConfig(pipeline_parallel=2).virtual_stages == 1
    with pytest.raises(ConfigError, match="applies to pipeline_schedule 'interleaved' only"):
        ParallelConfig(pipeline_parallel=2, stages_per_process=2)
    with pytest.raises(ConfigError, match="integer ≥ 2"):
        ParallelConfig(pipeline_parallel=2, pipeline_schedule="interleaved", stages_per_process=1)
    with pytest.raises(ConfigError, match="microbatches 3 is not a multiple of the 2"):
        ParallelConfig(pipeline_parallel=2, pipeline_schedule="interleaved", microbatches=3)
    interleaved = ParallelConfig(pipeline_parallel=4, pipeline_schedule="interleaved")
    assert resolve_microbatches(interleaved, 24) == 4
    assert resolve_microbatches(ParallelConfig(pipeline_parallel=4), 10) == 5
    with pytest.raises(ConfigError, match="no multiple of pipeline_parallel 4 divides"):
        resolve_microbatches(interleaved, 10)


def test_interleaved_needs_a_layer_per_stage() -> None:
    model = build_model(load_model_config("bert-tiny", {"hidden_size": 32, "encoder.num_heads": 2}))
    check_pipeline(model, 2, 1)
    with pytest.raises(ConfigError, match="pipeline_parallel 2 × stages_per_process 2 exceeds"):
        check_pipeline(model, 2, 2)
