"""SAMP: INT8 GEMMs, plans, the measured search, both backends, save/load and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from samp_helpers import tiny_classifier

import pretrainkit
from pretrainkit import samp
from pretrainkit.errors import CheckpointError, ConfigError, DataError
from pretrainkit.samp import backends, search
from pretrainkit.samp.data import load_task_set, outputs, score
from pretrainkit.samp.linear import FloatLinear, Int8Linear, quantize_per_token
from pretrainkit.samp.plan import Plan, parse_modes

ORT = pytest.mark.skipif(
    not backends.backend_available("onnxruntime"), reason="onnx / onnxruntime not installed"
)


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
    # The fastest *measured* feasible plan is the one chosen.
    assert chosen["latency_ms"] == min(c["latency_ms"] for c in feasible)
    assert len(report["sensitivity"]) == 4  # 2 layers x (ffn, full)
    assert {r["mode"] for r in report["sensitivity"]} == {"ffn", "full"}
    data = load_task_set(q, files["report"])
    assert report["chosen_metric_report"] == pytest.approx(
        score("accuracy", outputs(q, data), data.gold)
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


def test_choice_rules_on_synthetic_candidates():
    def cand(name, metric, ms):
        return search.Candidate(Plan(parse_modes(name, 3)), metric, 90.0 - metric, ms)

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
    with pytest.raises(ConfigError, match="no plan meets"):
        search.choose(cands, 0.5, 45)


@ORT
def test_onnxruntime_excludes_float_layers_by_name(tiny, tmp_path):
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


@ORT
def test_onnxruntime_plan_saves_and_loads(tiny, tmp_path):
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
    with pytest.raises(ConfigError, match="needs a model with a task head"):
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
    assert "| layer | FFN-only drop |" in out and "Chosen: the fastest measured plan" in out
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
    rows = last_json(out)["rows"]
    assert len(rows) == 4 and {r["plan"] for r in rows} == {"float-fp32", result["plan"]}
    assert all(r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in rows)
    assert all(r["weights_mb"] > 0 and r["folder_mb"] > 0 for r in rows)

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
