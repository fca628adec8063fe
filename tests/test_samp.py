"""SAMP: INT8 GEMMs, plans, the measured search and its noise rule, both backends, save/load,
causal attention with padding and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import require
from samp_helpers import require_fused_kernels, tiny_classifier

import pretrainkit
from pretrainkit import samp
from pretrainkit.errors import CheckpointError, ConfigError, DataError
from pretrainkit.samp import backends, search
from pretrainkit.samp.data import load_task_set, outputs, score
from pretrainkit.samp.linear import FloatLinear, Int8Linear, quantize_per_token
from pretrainkit.samp.plan import Plan, parse_modes


def require_onnxruntime():
    """The ONNX Runtime backend's dev dependencies: skip without them, fail in CI."""
    require("onnx")
    require("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("samp"), steps=40)


@pytest.fixture(scope="module")
def quantized(tiny):
    """The torch-backend search at tolerance 0 on the tiny classifier, with the float state."""
    model, files = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the search must leave the mode as it found it
    q = samp.quantize(
        model, files["calib"], files["select"], tolerance=0.0, report=files["report"], rounds=2
    )
    assert model.training
    model.eval()
    return q, before


def test_a_missing_dev_dependency_skips_and_fails_under_strict_tests(monkeypatch):
    monkeypatch.delenv("PRETRAINKIT_STRICT_TESTS", raising=False)
    assert require("json") is json
    with pytest.raises(pytest.skip.Exception, match="pretrainkit_absent is not installed"):
        require("pretrainkit_absent")
    monkeypatch.setenv("PRETRAINKIT_STRICT_TESTS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"pretrainkit_absent .*STRICT_TESTS=1"):
        require("pretrainkit_absent")


@pytest.mark.parametrize("kernel", ["int_mm", "fbgemm"])
def test_int8_linear_is_close_to_float(kernel):
    linear = torch.nn.Linear(64, 96)
    x = torch.randn(3, 7, 64)
    q = Int8Linear.from_linear(linear, torch.float32, kernel)
    want, got = linear(x), q(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    # Per-channel weights and per-token (or per-tensor) activations at 8 bits: ~1 % error.
    assert (got - want).norm() / want.norm() < 0.02
    if kernel == "int_mm":  # the exact integer computation it claims to do
        qx, sx = quantize_per_token(x.reshape(-1, 64))
        exact = (qx.double() @ q.weight.double().t()) * sx.double() * q.weight_scale.double()
        assert torch.allclose(got.reshape(-1, 96).double(), exact + linear.bias.double(), atol=1e-5)


def test_float_partner_linear_runs_in_bf16():
    linear = torch.nn.Linear(32, 16)
    x = torch.randn(5, 32)
    f = FloatLinear.from_linear(linear, torch.bfloat16)
    assert f(x).dtype == torch.bfloat16
    assert torch.allclose(f(x).float(), linear(x), atol=0.05)


def test_plan_json_round_trip_and_bad_modes(tmp_path):
    plan = Plan(["full", "ffn", "float"], "torch", "bf16", report={"x": 1})
    plan.save(tmp_path)
    assert Plan.load(tmp_path) == plan and plan.name == "QfF"
    assert parse_modes("QfF", 3) == ["full", "ffn", "float"] == parse_modes("full,ffn,float", 3)
    with pytest.raises(ConfigError, match="did you mean 'full'"):
        Plan(["fulll"])
    with pytest.raises(ConfigError, match="float_dtype 'fp16'"):
        Plan(["full"], float_dtype="fp16")
    (tmp_path / "samp_plan.json").write_text(json.dumps({"format": "other", "modes": []}))
    with pytest.raises(CheckpointError, match="not a SAMP plan"):
        Plan.load(tmp_path)


def test_full_int8_logits_stay_close_to_float(tiny):
    model, files = tiny
    data = load_task_set(model, files["select"])
    reference = outputs(model, data)
    for dtype in ("fp32", "bf16"):
        q = backends.build(model, Plan(["full", "full"], float_dtype=dtype))
        out = outputs(q, data)
        assert np.abs(out - reference).max() < 0.1 * np.abs(reference).max()
        assert (out.argmax(-1) == reference.argmax(-1)).mean() >= 0.95


def test_search_respects_tolerance_and_leaves_the_float_model_alone(tiny, quantized):
    model, files = tiny
    q, before = quantized
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.encoder.layers[0].feed_forward.up, torch.nn.Linear)
    report = q.samp_plan.report
    assert report["chosen_drop_select"] <= 0.0  # tolerance 0
    chosen = next(c for c in report["candidates"] if c["plan"] == q.samp_plan.name)
    feasible = [c for c in report["candidates"] if c["drop"] <= 0.0]

    # The measured fastest feasible plan, unless plans within its measured spread exist: then
    # the one of those with the lowest kernel estimate.
    def median(c):
        return float(np.median(c["latencies_ms"]))

    fastest = min(feasible, key=lambda c: (median(c), c["drop"]))
    low, high = fastest["latency_ci_ms"]  # 2 rounds: an interval is measured
    tied = [c for c in feasible if c["latency_ci_ms"][0] <= high and low <= c["latency_ci_ms"][1]]
    want = min(tied, key=lambda c: (c["estimate"], c["drop"], median(c)))
    assert chosen["plan"] == want["plan"]
    assert report["decided_by"] == ("measurement" if len(tied) == 1 else "kernel estimate")
    assert sorted(report["tied"]) == (sorted(c["plan"] for c in tied) if len(tied) > 1 else [])
    assert report["timing"]["rounds"] == 2 and all(len(c["latencies_ms"]) == 2 for c in feasible)
    assert chosen["latency_ms"] == pytest.approx(median(chosen), abs=1e-3)
    assert len(report["sensitivity"]) == 4  # 2 layers x (ffn, full)
    assert {r["mode"] for r in report["sensitivity"]} == {"ffn", "full"}
    data = load_task_set(q, files["report"])
    assert report["chosen_metric_report"] == pytest.approx(
        score("accuracy", outputs(q, data), data)
    )


def test_saved_quantized_model_loads_without_calibration(quantized, tiny, tmp_path):
    q, _ = quantized
    _, files = tiny
    samp.save_quantized(q, tmp_path / "q")
    assert json.loads((tmp_path / "q" / "samp_plan.json").read_text())["modes"] == q.samp_plan.modes
    loaded = pretrainkit.load(tmp_path / "q")
    data = load_task_set(q, files["report"])
    assert np.array_equal(outputs(loaded, data), outputs(q, data))
    assert loaded.samp_plan.modes == q.samp_plan.modes
    # Model.save on a quantized model writes the plan too, so the folder is never half a model.
    loaded.save(tmp_path / "again")
    again = pretrainkit.load(tmp_path / "again")
    assert np.array_equal(outputs(again, data), outputs(q, data))
    with pytest.raises(CheckpointError, match="not a SAMP-quantized model"):
        samp.save_quantized(pretrainkit.build_model(q.config), tmp_path / "float")


def test_the_quantized_folder_keeps_the_task_so_evaluate_reads_it(tiny, tmp_path):
    """A fine-tuned folder records its task (task.json); its quantized folder must too, or
    `evaluate` / `predict` on it fail with "not a fine-tuned model"."""
    from pretrainkit.tasks import task_of
    from pretrainkit.workflows.finetune import evaluate

    model, files = tiny
    record = task_of(model, "tiny").record()
    model.task_record = record
    try:
        q = samp.quantize(model, files["calib"], files["select"], tolerance=100.0, rounds=1)
    finally:
        model.task_record = None
    samp.save_quantized(q, tmp_path / "q")
    assert json.loads((tmp_path / "q" / "task.json").read_text()) == record
    data = load_task_set(q, files["report"])
    scored = evaluate(tmp_path / "q", files["report"])
    assert 100 * scored["accuracy"] == pytest.approx(score("accuracy", outputs(q, data), data))


def synthetic(name: str, metric: float, rounds: list[float]) -> search.Candidate:
    """A candidate measured in ``rounds`` (ms per round), drop from a float metric of 90; the
    default torch plan on a bf16 CPU (fused kernel)."""
    plan = Plan(parse_modes(name, len(name)), "torch", "bf16", "fused")
    return search.Candidate(plan, metric, 90.0 - metric).timed(rounds)


def test_choice_rules_on_synthetic_candidates():
    def cand(name, metric, ms):  # well separated: +-1 % round to round
        return synthetic(name, metric, [ms * 0.99, ms, ms * 1.01, ms, ms * 0.995])

    cands = [
        cand("FFF", 90.0, 100),
        cand("fFF", 89.9, 80),
        cand("ffQ", 89.6, 50),
        cand("QQQ", 85, 40),
    ]
    assert [c.plan.name for c in search.frontier(cands)] == ["QQQ", "ffQ", "fFF", "FFF"]
    assert search.choose(cands, 0.5, None)[0].plan.name == "ffQ"
    assert search.choose(cands, 0.05, None)[0].plan.name == "FFF"
    assert search.choose(cands, None, 60)[0].plan.name == "ffQ"
    chosen, why = search.choose(cands, None, None)
    assert chosen.plan.name == "ffQ" and "knee" in why
    # Differences far beyond the spread: the measurement decides every mode.
    for tolerance, budget in ((0.5, None), (None, 60), (None, None)):
        assert search.decide(cands, tolerance, budget).by in ("measurement", "accuracy")
        assert search.decide(cands, tolerance, budget).tied == []
    with pytest.raises(ConfigError, match="no plan meets"):
        search.choose(cands, 0.5, 45)


# Seven rounds of a loaded machine: +-25 % from round to round.
NOISE = [-2.0, 2.5, -1.5, 3.0, -2.5, 1.0, 0.0]


def test_latencies_inside_the_noise_are_ranked_by_the_kernel_estimate():
    # The float plan happens to time fastest, by less than the spread: INT8 still wins.
    noisy = [
        synthetic("FFF", 90.0, [9.0 + d for d in NOISE]),
        synthetic("ffF", 90.0, [9.5 + d for d in NOISE[::-1]]),
        synthetic("QQQ", 89.8, [10.0 + d for d in NOISE[3:] + NOISE[:3]]),
    ]
    assert [c.latency_ms for c in noisy] == [9.0, 9.5, 10.0]
    assert search.overlap(noisy[0], noisy[2])
    decision = search.decide(noisy, 0.5, None)
    assert decision.chosen.plan.name == "QQQ" and decision.by == "kernel estimate"
    assert {c.plan.name for c in decision.tied} == {"FFF", "ffF", "QQQ"}
    assert re.search(
        r"latencies of plans QQQ \(10.00 ms, 95 % interval [\d.]+-[\d.]+\) and FFF \(9.00 ms, "
        r".*\) differ by less than the measured spread \(their 95 % intervals overlap; 3 plans "
        r"are within it\); chose by kernel estimate: QQQ is estimated at 0.56x the all-float "
        r"time, FFF at 1.00x",
        decision.reason,
    ), decision.reason
    # A tolerance that only the float-heavy plans meet: the estimate ranks those two.
    assert search.choose(noisy, 0.1, None)[0].plan.name == "ffF"
    # Budget: the most accurate plans (FFF, ffF) tie on accuracy; the noise cannot split them.
    decision = search.decide(noisy, None, 20.0)
    assert decision.chosen.plan.name == "ffF" and decision.by == "kernel estimate"
    assert "among the 2 equally accurate plans" in decision.reason
    # Knee: the frontier is FFF alone (fastest median, most accurate); ffF is as accurate and
    # lost only inside the noise, so the estimate takes it; QQQ, less accurate, is no rival.
    decision = search.decide(noisy, None, None)
    assert decision.chosen.plan.name == "ffF" and {c.plan.name for c in decision.tied} == {
        "FFF",
        "ffF",
    }
    # As accurate as the knee, QQQ wins the same way.
    noisy[2].metric, noisy[2].drop = 90.0, 0.0
    decision = search.decide(noisy, None, None)
    assert decision.chosen.plan.name == "QQQ" and "is at least as accurate" in decision.reason
    # One round: no spread at all, so the measurement ranks nothing.
    once = [synthetic("FFF", 90.0, [9.0]), synthetic("QQQ", 90.0, [10.0])]
    decision = search.decide(once, 0.5, None)
    assert decision.chosen.plan.name == "QQQ"
    assert "one timing round: no spread was measured" in decision.reason


def test_latencies_beyond_the_noise_decide():
    # The float-heavy plan is truly faster (say, a CPU without VNNI): the measurement wins
    # against the estimate.
    quiet = [-0.02, 0.01, 0.0, 0.02, -0.01, 0.015, -0.015]
    clear = [
        synthetic("FFF", 90.0, [5.0 + d for d in quiet]),
        synthetic("ffF", 90.0, [5.2 + d for d in quiet]),
        synthetic("QQQ", 90.0, [10.0 + d for d in quiet]),
    ]
    assert not search.overlap(clear[0], clear[1])
    decision = search.decide(clear, 0.5, None)
    assert decision.chosen.plan.name == "FFF" and decision.by == "measurement"
    assert decision.tied == []
    assert re.search(
        r"FFF \(5.00 ms, 95 % interval [\d.]+-[\d.]+\) is measured faster than every other "
        r"such plan by more than the measured spread \(next: ffF, 5.20 ms",
        decision.reason,
    ), decision.reason
    assert search.decide(clear, None, 20.0).chosen.plan.name == "FFF"
    assert search.decide(clear, None, None).chosen.plan.name == "FFF"
    # Only the plans inside the fastest one's spread are weighed: ffF (overlapping FFF) wins
    # over FFF by estimate, QQQ (far slower) is not considered.
    clear[1].timed([5.0 + d for d in quiet[::-1]])
    decision = search.decide(clear, 0.5, None)
    assert decision.chosen.plan.name == "ffF"
    assert {c.plan.name for c in decision.tied} == {"FFF", "ffF"}


def test_median_interval_and_the_kernel_estimate(tiny):
    assert search.median_interval([3.0]) is None
    assert search.median_interval([1.0, 2.0]) == (1.0, 2.0)
    assert search.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.0, 5.0)
    # From 7 rounds on, one slow round (a load spike) does not widen the interval.
    assert search.median_interval([1.0] * 6 + [9.0]) == (1.0, 1.0)
    assert search.median_interval([1, 2, 3, 4, 5, 6, 7]) == (2.0, 6.0)

    # The interpolation against the benchmark it comes from: bert-base, half full INT8 and half
    # FFN-only, measured 44.42 and 42.57 ms where all-float took 69.01 and 66.95 ms.
    half = Plan(["full"] * 6 + ["ffn"] * 6, "torch", "bf16", "fused")
    for all_float, measured in ((69.01, 44.42), (66.95, 42.57)):
        assert search.kernel_estimate(half) * all_float == pytest.approx(measured, abs=1.0)
    ratio, source = search.int8_ratio(half)
    assert ratio == pytest.approx((39.02 / 69.01 + 37.27 / 66.95) / 2)
    assert "BENCHMARKS.md" in source
    ratio, source = search.int8_ratio(Plan(["full"], "torch", "fp32", "fused"))
    assert ratio == pytest.approx((50.39 / 255.83 + 45.34 / 247.87) / 2)
    assert "the fused kernel was not benchmarked" in source
    assert search.int8_ratio(Plan(["full"], "onnxruntime"))[0] == pytest.approx(0.38, abs=0.01)

    # The tiny model: attention (4 x 64 x 64) and FFN (2 x 64 x 128) GEMMs are equal work.
    model, _ = tiny
    macs = search.gemm_macs(model)
    assert macs == [{"attention": 4 * 64 * 64, "ffn": 2 * 64 * 128}] * 2
    r = search.int8_ratio(Plan(["full"] * 2, "torch", "bf16", "fused"))[0]
    estimates = {
        name: search.kernel_estimate(Plan(parse_modes(name, 2), "torch", "bf16", "fused"), macs)
        for name in ("FF", "fF", "ff", "QF", "Qf", "QQ")
    }
    share = {"FF": 0, "fF": 0.25, "ff": 0.5, "QF": 0.5, "Qf": 0.75, "QQ": 1.0}
    assert estimates == pytest.approx({k: 1 - v * (1 - r) for k, v in share.items()})


def fake_timer(centres: dict[str, float], spread: list[float]):
    """``search.measure_latency`` without timing: each model's rounds are its centre (default
    10 ms) plus ``spread`` rotated by the model's place, so that medians are the centres."""

    def measure(models, inputs, rounds=5, repeats=3, warmup=2):
        assert rounds == len(spread)
        return {
            name: [centres.get(name, 10.0) + d for d in spread[i % rounds :] + spread[: i % rounds]]
            for i, name in enumerate(models)
        }

    return measure


@pytest.mark.parametrize("case", ["inside the noise", "beyond the noise"])
def test_quantize_report_says_why_a_latency_did_or_did_not_decide(
    case, tiny, tmp_path, monkeypatch
):
    model, files = tiny
    if case == "inside the noise":  # the all-float plan spuriously fastest on a loaded machine
        timer = fake_timer({"FF": 9.0}, NOISE)
    else:  # the all-float plan truly faster, far beyond a quiet machine's spread
        timer = fake_timer({"FF": 5.0}, [d / 100 for d in NOISE])
    monkeypatch.setattr(search, "measure_latency", timer)
    q = samp.quantize(model, files["calib"], files["select"], tolerance=100.0)
    report = q.samp_plan.report
    by_name = {c["plan"]: c for c in report["candidates"]}
    assert report["timing"]["rounds"] == 7 and by_name["FF"]["latency_ms"] < min(
        c["latency_ms"] for n, c in by_name.items() if n != "FF"
    )
    samp.save_quantized(q, tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "samp_report.json").read_text())["report"]
    text = (tmp_path / "q" / "samp_report.md").read_text()
    assert saved["reason"] == report["reason"] and f"Chosen: {report['reason']}." in text
    if case == "inside the noise":
        assert q.samp_plan.name == "QQ" and report["decided_by"] == "kernel estimate"
        assert set(report["tied"]) == set(by_name)  # every plan within the spread of FF
        assert re.search(
            r"latencies of plans QQ \(.*\) and FF \(9.00 ms.*\) differ by less than the "
            r"measured spread .*; chose by kernel estimate: QQ is estimated at",
            report["reason"],
        ), report["reason"]
        assert "| `QQ` **(chosen, tied" in text and "Decided by: kernel estimate." in text
    else:
        assert q.samp_plan.name == "FF" and report["decided_by"] == "measurement"
        assert report["tied"] == []
        assert "FF (5.00 ms, 95 % interval" in report["reason"]
        assert "is measured faster than every other such plan" in report["reason"]
        assert "| `FF` **(chosen)**" in text and "Decided by: measurement." in text


def test_onnxruntime_excludes_float_layers_by_name(tiny, tmp_path):
    require_onnxruntime()
    model, files = tiny
    from pretrainkit.samp.onnx_backend import gemm_node_names

    plan = Plan(["ffn", "float"], backend="onnxruntime")
    q = backends.build(model, plan, tmp_path)
    import onnx

    nodes = {n.name: n.op_type for n in onnx.load(str(q.encoder.path)).graph.node}
    assert sum(op == "MatMulInteger" for op in nodes.values()) == 2  # layer 0 up and down
    assert nodes["/layers.0/attention/query/MatMul"] == "MatMul"
    assert nodes["/layers.1/feed_forward/up/MatMul"] == "MatMul"
    data = load_task_set(model, files["select"])
    reference = outputs(model, data)
    assert np.abs(outputs(q, data) - reference).max() < 0.1 * np.abs(reference).max()
    renamed = {k.replace("layers.1", "blocks.1"): v for k, v in nodes.items()}
    with pytest.raises(ConfigError, match="would not match the graph"):
        gemm_node_names(model, plan, renamed)


def test_onnxruntime_plan_saves_and_loads(tiny, tmp_path):
    require_onnxruntime()
    model, files = tiny
    q = samp.quantize(model, files["calib"], files["select"], backend="onnxruntime", rounds=1)
    assert q.samp_plan.backend == "onnxruntime" and q.samp_plan.float_dtype == "fp32"
    samp.save_quantized(q, tmp_path / "q")
    assert (tmp_path / "q" / "encoder.onnx").is_file()
    loaded = pretrainkit.load(tmp_path / "q")
    data = load_task_set(model, files["report"])
    assert np.array_equal(outputs(loaded, data), outputs(q, data))


def test_bad_input_is_a_clear_error(tiny, tmp_path, monkeypatch):
    model, files = tiny
    calib, select = files["calib"], files["select"]
    with pytest.raises(ConfigError, match="tolerance must be >= 0"):
        samp.quantize(model, calib, select, tolerance=-0.5)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.tsv: file is empty"):
        samp.quantize(model, empty, select)
    other = tmp_path / "other.tsv"
    other.write_text("label\ttext_a\npositive\tthe big horse\n")
    with pytest.raises(DataError, match=r"other.tsv:2: label 'positive' is not one of"):
        samp.quantize(model, other, select)
    headless = pretrainkit.build_model("bert-tiny", {"hidden_size": 64, "encoder.num_heads": 2})
    with pytest.raises(ConfigError, match="not a fine-tuned model"):
        samp.quantize(headless, calib, select)
    with pytest.raises(ConfigError, match="does not apply to a classification model"):
        samp.quantize(model, calib, select, metric="spearman")
    monkeypatch.setattr(backends, "backend_available", lambda name: name == "torch")
    with pytest.raises(ConfigError, match="'onnxruntime' is not installed"):
        samp.quantize(model, calib, select, backend="onnxruntime")
    with pytest.raises(ConfigError, match="fp16 is not offered on CPU"):
        samp.quantize(model, calib, select, float_dtype="fp16")
    elsewhere = backends.clone_model(model).to("meta")  # stands in for a GPU model here
    with pytest.raises(ConfigError, match="SAMP quantizes CPU models; the model is on meta"):
        samp.quantize(elsewhere, calib, select)


def test_quantize_bench_and_the_task_commands_through_the_cli(tiny, tmp_path, capsys):
    from helpers import PNG_SIGNATURE, invoke, last_json

    model, files = tiny
    model.save(tmp_path / "float")
    code, out, err = invoke(
        capsys, "quantize", "--model", tmp_path / "float", "--calib", files["calib"],
        "--select", files["select"], "--report", files["report"], "--tolerance", "1.0",
        "--latency-shape", "1x16", "--rounds", "2", "--out", tmp_path / "q",
    )  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert "| layer | FFN-only drop |" in out and "Chosen: the fastest plan whose drop" in out
    assert "95 % bootstrap interval of the median" in out
    by_estimate = "chose by kernel estimate" in result["reason"]
    assert (result["decided_by"] == "kernel estimate") == by_estimate, result["reason"]
    assert result["chosen_drop_select"] <= 1.0
    q = tmp_path / "q"
    assert (q / "samp_report.png").read_bytes().startswith(PNG_SIGNATURE)
    saved = json.loads((q / "samp_report.json").read_text())
    assert saved["modes"] == result["modes"] and len(saved["report"]["sensitivity"]) == 4
    assert "samp_report.md" in result["files"] and (q / "samp_report.md").is_file()

    code, out, err = invoke(capsys, "evaluate", "--model", q, "--data", files["report"])
    assert code == 0, err
    assert 100 * last_json(out)["accuracy"] == pytest.approx(result["chosen_metric_report"])
    code, out, err = invoke(
        capsys, "predict", "--model", q, "--data", files["report"], "--out", tmp_path / "p.tsv"
    )
    assert code == 0, err
    assert len((tmp_path / "p.tsv").read_text().splitlines()) == 65
    code, out, err = invoke(
        capsys, "embed", "--model", q, "--data", files["report"], "--out", tmp_path / "e.npy"
    )
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape == (64, 64)

    code, out, err = invoke(
        capsys, "bench", "--model", tmp_path / "float", q, "--batch", "1,2", "--seq", "8",
        "--rounds", "1", "--repeats", "2",
    )  # fmt: skip
    assert code == 0, err
    bench = last_json(out)
    rows = bench["rows"]
    assert bench["threads"] == torch.get_num_threads()  # bench leaves the thread count alone
    assert len(rows) == 4 and {r["plan"] for r in rows} == {"float-fp32", result["plan"]}
    assert {(r["batch"], r["seq"]) for r in rows} == {(1, 8), (2, 8)}
    for r in rows:  # throughput is the batch over the median call
        assert r["p50_ms"] > 0
        assert r["sequences_per_s"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"], rel=0.01)
    float_row = next(r for r in rows if r["plan"] == "float-fp32")
    params = sum(p.numel() * p.element_size() for p in model.state_dict().values()) / 2**20
    assert float_row["weights_mb"] == pytest.approx(params, abs=0.051)
    assert all(r["folder_mb"] > 0 for r in rows)

    code, _, err = invoke(capsys, "quantize", "--model", q, "--calib", files["calib"],
                          "--select", files["select"], "--out", tmp_path / "qq")  # fmt: skip
    assert code == 2 and "already quantized" in err
    code, _, err = invoke(capsys, "bench", "--model", q, "--seq", "512")
    assert code == 2 and "--seq 512" in err
    code, _, err = invoke(capsys, "quantize", "--model", tmp_path / "float", "--calib",
                          files["calib"], "--select", files["select"], "--backend", "tensorrt",
                          "--out", tmp_path / "qq")  # fmt: skip
    assert code == 2 and "--backend 'tensorrt'" in err
    assert not (tmp_path / "qq").exists()


@pytest.mark.parametrize("causal", [False, True])
def test_inference_attention_matches_multi_head_attention(causal):
    from pretrainkit.layers.attention import MultiHeadAttention
    from pretrainkit.samp.attention import InferenceAttention

    attention = MultiHeadAttention(64, 4).eval()
    x = torch.randn(2, 9, 64)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False  # padding in the second row
    fast = InferenceAttention.adopt(attention, torch.float32)
    assert set(fast.state_dict()) == set(attention.state_dict())
    for m in (None, mask):
        want = attention(x, None if causal else m, None, causal and m is None)
        got = fast(x, None if causal else m, None, causal and m is None)
        assert torch.allclose(got, want, atol=1e-5)
    # Full INT8 projections are fused into one GEMM and give what the three give apart.
    for name in ("query", "key", "value"):
        setattr(fast, name, Int8Linear.from_linear(getattr(attention, name), torch.float32))
    fused = fast(x, mask)
    object.__setattr__(fast, "_fused", False)  # the unfused path
    assert torch.allclose(fused, fast(x, mask), atol=1e-5)


@pytest.mark.parametrize("kernel", ["int_mm", "fbgemm", "fused"])
@pytest.mark.parametrize("float_dtype", ["fp32", "bf16"])
def test_causal_model_gives_the_same_outputs_with_right_padding(kernel, float_dtype):
    """A decoder-only (causal) classifier through SAMP's inference attention: a row's real
    positions come out the same alone and right-padded in a batch, and close to float."""
    if kernel == "fused":
        require_fused_kernels()
    torch.manual_seed(0)
    head = {"name": "classification", "options": {"labels": ["0", "1"], "pooling": "last"}}
    tiny_gpt = {
        "hidden_size": 64,
        "encoder.num_layers": 2,
        "encoder.num_heads": 2,
        "encoder.ffn_size": 128,
        "embedding.max_positions": 64,
        "vocab_size": 50,
        "targets": [head],
    }
    model = pretrainkit.build_model("gpt2-small", tiny_gpt).eval()
    assert model.encoder.causal
    # Layer 0 full INT8 (fused QKV), layer 1 FFN-only (float-partner attention).
    q = backends.build(model, Plan(["full", "ffn"], float_dtype=float_dtype, kernel=kernel))
    assert all(type(b).__name__ == "InferenceBlock" for b in q.encoder.layers)
    ids = torch.tensor([[7, 12, 9, 30, 11]])
    other = torch.randint(5, 50, (1, 9), generator=torch.Generator().manual_seed(1))
    batch = torch.cat([torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1), other])
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, 5:] = 0  # right padding
    with torch.no_grad():
        want = model.encoder_states(ids)
        want_logits = model(ids).logits
        float_padded = model.encoder_states(batch, mask)[:1, :5]
        alone, alone_logits = q.encoder_states(ids), q(ids).logits
        padded = q.encoder_states(batch, mask)[:1, :5]
        padded_logits = q(batch, attention_mask=mask).logits[:1]
    assert torch.allclose(float_padded, want, atol=1e-5)
    scale = want.abs().max()
    if kernel == "fbgemm":
        # One activation scale per call over the whole batch: the other row and the padding
        # move it, so the padded row matches only within quantization error.
        assert (padded - alone).abs().max() < 0.05 * scale
    else:  # per-token scales: padding and other rows change nothing
        assert torch.allclose(padded, alone, atol=1e-5)
        assert torch.allclose(padded_logits, alone_logits, atol=1e-5)
    for got in (alone, padded):
        assert (got - want).abs().max() < 0.05 * scale
    for logits in (alone_logits, padded_logits):
        assert (logits - want_logits).abs().max() < 0.05 * want_logits.abs().max() + 1e-3
