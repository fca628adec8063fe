"""The training loop on a toy model: learning, accumulation, schedules, precision, checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pretrainkit.errors import CheckpointError, ConfigError, PretrainkitError
from pretrainkit.training import TrainConfig, Trainer, cpu_flags, plot_run, resolve_precision
from pretrainkit.training import precision as precision_module
from pretrainkit.training.checkpoint import (
    list_checkpoints,
    load_trainer_state,
    verify_checkpoint,
)
from pretrainkit.training.optim import build_optimizer, build_scheduler
from pretrainkit.training.runlog import read_metrics

VOCAB = 16


@dataclass
class ToyOutput:
    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class ToyLM(nn.Module):
    """Embedding -> LayerNorm -> dropout -> linear; learns label = (token + 1) % VOCAB."""

    def __init__(self, hidden: int = 32, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, VOCAB)
        self.calls = 0
        self.nan_calls: set[int] = set()  # forward calls whose loss is poisoned with NaN

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> ToyOutput:
        self.calls += 1
        hidden = self.drop(self.norm(self.embed(input_ids)))  # [b, s, h]
        logits = self.head(hidden)  # [b, s, v]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        if self.calls in self.nan_calls:
            loss = loss * float("nan")
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return ToyOutput(loss, {"accuracy": accuracy})

    def save(self, directory: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(directory) / "model.safetensors"))
        (Path(directory) / "config.yaml").write_text("model: toy\n")

    def load_weights(self, directory: Path) -> None:
        self.load_state_dict(load_file(str(Path(directory) / "model.safetensors")), strict=True)

    def trainable_parameters(self):
        return self.parameters()


class ToyData:
    """Batches that are a pure function of (seed, position): resume restores the position."""

    def __init__(self, seed: int = 1, batch_size: int = 4, seq_len: int = 8, delay: float = 0.0):
        self.seed, self.batch_size, self.seq_len, self.delay = seed, batch_size, seq_len, delay
        self.position = 0

    def next_batch(self) -> dict[str, Tensor]:
        if self.delay:
            time.sleep(self.delay)  # lets a test kill the process mid-run
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        starts = rng.integers(0, VOCAB, size=(self.batch_size, 1))
        ids = torch.from_numpy((starts + np.arange(self.seq_len)) % VOCAB)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": (ids + 1) % VOCAB,
        }

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


class ListData(ToyData):
    """Serves a fixed list of batches in order."""

    def __init__(self, batches: list[dict[str, Tensor]]):
        super().__init__()
        self.batches = batches

    def next_batch(self) -> dict[str, Tensor]:
        self.position += 1
        return self.batches[self.position - 1]


def config(**overrides) -> TrainConfig:
    base = dict(steps=6, lr=1e-2, precision="fp32", device="cpu", progress=False, log_every=1)
    return TrainConfig(**{**base, **overrides})


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(tmp_path: Path, name: str = "run", seed: int = 0, model=None, data=None, **overrides):
    torch.manual_seed(seed)
    model = model or ToyLM()
    trainer = Trainer(model, data or ToyData(), config(**overrides), tmp_path / name)
    return trainer, trainer.fit()


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    trainer, summary = train(tmp_path, steps=60, warmup=5, log_every=10, scheduler="cosine")
    logged = records(tmp_path / "run")
    assert [r["step"] for r in logged] == [10, 20, 30, 40, 50, 60]
    assert logged[0]["loss"] > 1.5
    assert summary["final_loss"] == logged[-1]["loss"] < 0.3 * logged[0]["loss"]
    assert logged[-1]["accuracy"] > 0.9
    assert summary["steps"] == 60 and summary["skipped_steps"] == 0
    assert summary["tokens_per_s"] > 0
    assert trainer.tokens_seen == 60 * 4 * 8
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in logged)
    assert any((tmp_path / "run" / "tb").iterdir())
    reloaded = ToyLM()
    reloaded.load_weights(summary["model_dir"])
    for a, b in zip(reloaded.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)


def test_optimizer_is_fused_adamw_without_decay_on_vectors():
    optimizer = build_optimizer(ToyLM(), config(weight_decay=0.1))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3  # norm w/b, head bias


def test_accumulation_equals_large_batch():
    data = ToyData(batch_size=4)
    first, second = data.next_batch(), data.next_batch()
    both = {k: torch.cat([first[k], second[k]]) for k in first}

    def one_step(batches, accumulate, tmp):
        torch.manual_seed(3)
        model = ToyLM(dropout=0.0)
        grads = {}
        for name, param in model.named_parameters():
            param.register_post_accumulate_grad_hook(
                lambda p, name=name: grads.__setitem__(name, p.grad.clone())
            )
        cfg = config(steps=1, accumulate=accumulate, clip_grad=None, lr=1e-3)
        Trainer(model, ListData(batches), cfg, tmp).fit()
        return grads, dict(model.named_parameters())

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        grads_acc, params_acc = one_step([first, second], 2, Path(tmp) / "a")
        grads_big, params_big = one_step([both], 1, Path(tmp) / "b")
    assert grads_acc.keys() == grads_big.keys() and len(grads_acc) == 5
    for name in grads_acc:
        torch.testing.assert_close(grads_acc[name], grads_big[name], atol=1e-6, rtol=0)
        torch.testing.assert_close(params_acc[name], params_big[name], atol=1e-6, rtol=0)
    assert grads_big["head.weight"].abs().max() > 1e-3  # a real gradient was compared


@pytest.mark.parametrize(
    "name, expected",
    [
        ("constant", [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("linear", [0.5, 1] + [1 - k / 8 for k in range(8)]),
        ("cosine", [0.5, 1] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]),
        ("polynomial", [0.5, 1] + [(1 - k / 8) ** 2 for k in range(8)]),
        ("inverse_sqrt", [0.5, 1] + [math.sqrt(2 / (s + 1)) for s in range(2, 10)]),
    ],
)
def test_scheduler_follows_formula_with_warmup(name, expected):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    scheduler = build_scheduler(
        optimizer, config(steps=10, warmup=2, scheduler=name, lr=0.1, power=2.0)
    )
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1 * e for e in expected], rel=1e-12, abs=1e-15)


def test_warmup_rises_linearly_and_is_logged(tmp_path):
    train(tmp_path, steps=6, warmup=4, scheduler="constant", lr=0.02)
    lrs = [r["lr"] for r in records(tmp_path / "run")]
    assert lrs == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])


def test_bf16_autocast_trains(tmp_path):
    model = ToyLM()
    seen: list[tuple[bool, torch.dtype, torch.dtype]] = []  # (training, input, output dtype)

    def record(module, inputs, output):
        seen.append((module.training, inputs[0].dtype, output.dtype))

    model.head.register_forward_hook(record)
    trainer, summary = train(tmp_path, model=model, steps=30, log_every=5, precision="bf16")
    assert trainer.precision == "bf16"
    # Autocast ran every forward: the Linear computed in bf16 on the fp32 LayerNorm output.
    assert seen == [(True, torch.float32, torch.bfloat16)] * 30
    # The master weights and the optimizer's moments stay fp32.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    moments = [v for s in trainer.optimizer.state.values() for k, v in s.items() if k != "step"]
    assert len(moments) == 10 and all(m.dtype == torch.float32 for m in moments)
    losses = [r["loss"] for r in records(tmp_path / "run")]
    assert len(losses) == 6 and losses[0] > 2.0 and losses[-1] < 0.25 * losses[0], losses


def test_precision_resolution(tmp_path, monkeypatch, caplog):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert "avx512_bf16" in cpu_flags(cpuinfo) and cpu_flags(tmp_path / "missing") == frozenset()
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_precision("auto", "cpu") == "fp32"
    # bf16 asked for on such a CPU: honoured, and the emulation is said (once a process).
    precision_module.warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="pretrainkit.training.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    assert "without native bf16 instructions" in caplog.text
    caplog.clear()
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert resolve_precision("auto", "cpu") == "bf16"
    with caplog.at_level("WARNING", logger="pretrainkit.training.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    assert caplog.text == ""
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ConfigError, match="fp16.*needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
    model = ToyLM()
    model.nan_calls = {3}
    with pytest.raises(PretrainkitError, match="at step 3"):
        train(tmp_path, model=model, steps=6, save_every=2)
    run = tmp_path / "run"
    assert [step for step, _ in list_checkpoints(run)] == [2]  # nothing written for step 3
    assert not (run / "model").exists()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_skip_nonfinite_counts_skipped_steps(tmp_path):
    model = ToyLM()
    model.nan_calls = {2, 5}
    _, summary = train(tmp_path, model=model, steps=6, skip_nonfinite=True)
    assert summary["skipped_steps"] == 2
    logged = records(tmp_path / "run")
    assert [r["loss"] is None for r in logged] == [False, True, False, False, True, False]
    assert [r["skipped_steps"] for r in logged] == [0, 1, 1, 1, 2, 2]


def test_checkpoint_rotation_keeps_last_k(tmp_path):
    train(tmp_path, steps=10, save_every=2, keep_last=3)
    found = list_checkpoints(tmp_path / "run")
    assert [step for step, _ in found] == [6, 8, 10]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000006",
        "step-00000008",
        "step-00000010",
    ]
    names = {p.name for p in found[-1][1].iterdir()}
    files = {"model.safetensors", "config.yaml", "trainer_state.pt", "data_state.json"}
    assert names == files | {"manifest.json"}
    # The manifest, written last, lists every other file with its size and SHA-256.
    manifest = json.loads((found[-1][1] / "manifest.json").read_text())
    assert (manifest["format"], manifest["step"], set(manifest["files"])) == (
        "pretrainkit-checkpoint-manifest",
        10,
        files,
    )
    for name, entry in manifest["files"].items():
        data = (found[-1][1] / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    positions = json.loads((found[0][1] / "data_state.json").read_text())
    assert positions == {"world_size": 1, "ranks": [{"position": 6}]}  # one per process


def test_trainer_state_loads_weights_only_and_refuses_pickled_code(tmp_path):
    train(tmp_path, steps=2)
    path = tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer_state.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 2 and raw["counters"]["tokens_seen"] == 2 * 32
    assert set(raw) >= {"optimizer", "scheduler", "rng"}
    assert load_trainer_state(path.parent)["step"] == 2
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": ToyData()}, evil)  # an arbitrary object needs pickle code
    with pytest.raises(CheckpointError, match="weights_only"):
        load_trainer_state(evil)


RUNNER = """
import importlib.util, sys, time
import torch
from pretrainkit.training import TrainConfig, Trainer

spec = importlib.util.spec_from_file_location("toy", {test_file!r})
toy = sys.modules["toy"] = importlib.util.module_from_spec(spec)  # dataclasses need it
spec.loader.exec_module(toy)
out_dir, resume, delay = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
save_delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0


class SlowSave(toy.ToyLM):
    def save(self, directory):
        super().save(directory)
        time.sleep(save_delay)  # widens the window in which a kill hits a half-written checkpoint


torch.set_num_threads(1)
torch.manual_seed(0)
config = TrainConfig(steps=12, lr=1e-2, save_every=3, log_every=1, precision="fp32",
                     device="cpu", progress=False)
Trainer(SlowSave(), toy.ToyData(delay=delay), config, out_dir, resume=resume).fit()
"""


def start_runner(tmp_path: Path, run: Path, resume: bool, delay: float, save_delay: float = 0.0):
    """The RUNNER in a subprocess (one training run of 12 steps, a checkpoint every 3)."""
    runner = tmp_path / "runner.py"
    if not runner.exists():
        runner.write_text(RUNNER.format(test_file=__file__))
    args = [sys.executable, str(runner), str(run), str(int(resume)), str(delay), str(save_delay)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The RUNNER's run without interruption: the losses and weights every resume must match."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    process = start_runner(tmp_path, tmp_path / "run", resume=False, delay=0.0)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output.decode()
    return tmp_path / "run"


def test_resume_after_sigkill_continues_the_same_loss_curve(tmp_path, uninterrupted):
    def start(run: str, resume: bool, delay: float) -> subprocess.Popen:
        return start_runner(tmp_path, tmp_path / run, resume, delay)

    victim = start("victim", False, 0.15)
    deadline = time.monotonic() + 60

    def logged_past_checkpoint() -> bool:
        # Kill only once a step after the checkpoint is logged, so resume must truncate.
        found = list_checkpoints(tmp_path / "victim")
        try:
            steps = [r["step"] for r in records(tmp_path / "victim")] if found else []
        except json.JSONDecodeError:  # caught a line being written
            return False
        return bool(steps) and max(steps) > found[-1][0]

    while not logged_past_checkpoint():
        assert victim.poll() is None and time.monotonic() < deadline, victim.stdout.read()
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    resumed_from = list_checkpoints(tmp_path / "victim")[-1][0]
    assert 3 <= resumed_from < 12 and not (tmp_path / "victim" / "model").exists()
    assert max(r["step"] for r in records(tmp_path / "victim")) > resumed_from

    resumed = start("victim", True, 0.0)
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output.decode()

    expected = {r["step"]: r["loss"] for r in records(uninterrupted)}
    logged = [(r["step"], r["loss"]) for r in records(tmp_path / "victim")]
    assert [step for step, _ in logged] == list(range(1, 13))  # no duplicates after truncation
    after = [(step, loss) for step, loss in logged if step > resumed_from]
    assert after and all(loss == expected[step] for step, loss in after), (after, expected)
    final = load_file(str(tmp_path / "victim" / "model" / "model.safetensors"))
    reference_final = load_file(str(uninterrupted / "model" / "model.safetensors"))
    assert all(torch.equal(final[k], reference_final[k]) for k in reference_final)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


def test_random_kills_then_a_damaged_latest_checkpoint_resume_exactly(tmp_path, uninterrupted):
    run = tmp_path / "victim"
    checkpoints = run / "checkpoints"
    rng = random.Random(20240611)

    # First kill: while the step-3 checkpoint is half written (weights saved, the rest not).
    process = start_runner(tmp_path, run, resume=False, delay=0.05, save_delay=0.5)
    deadline = time.monotonic() + 60
    while not (checkpoints.is_dir() and any(checkpoints.glob(".tmp-step-*/model.safetensors"))):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.005)
    _kill(process)
    assert list_checkpoints(run) == []  # the half-written one was never published

    # Then kills at seeded random moments, often inside a checkpoint write (0.3 s of each
    # 0.45 s between checkpoints), each run resuming the one before.
    for _ in range(3):
        process = start_runner(tmp_path, run, resume=True, delay=0.05, save_delay=0.3)
        time.sleep(rng.uniform(1.0, 4.0))
        _kill(process)
        # Whenever it died, every published checkpoint is whole.
        assert all(verify_checkpoint(folder) is None for _, folder in list_checkpoints(run))
    if len(list_checkpoints(run)) < 2:  # the kills came early: give the fallback something
        process = start_runner(tmp_path, run, resume=True, delay=0.0)
        assert process.wait(timeout=120) == 0
    (_, intact), (latest_step, latest) = list_checkpoints(run)[-2:]

    # Damage the newest: cut its weights short and overwrite its trainer state.
    weights = latest / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as file:
        file.truncate(size // 2)
    (latest / "trainer_state.pt").write_bytes(b"not a checkpoint")

    process = start_runner(tmp_path, run, resume=True, delay=0.0)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output
    assert f"checkpoint {latest} is damaged (model.safetensors has {size // 2} bytes" in output
    assert "trainer_state.pt has 16 bytes" in output and f"resuming from {intact.name}" in output
    assert "Traceback" not in output
    # The damaged checkpoint is kept, renamed. The resumed run wrote every checkpoint from the
    # intact one on and keeps the last two (keep_last): whole, whichever step was damaged (a
    # damaged step 6, where the kills came early on a loaded machine, is written and pruned).
    damaged = checkpoints / f"{latest.name}.damaged"
    assert (damaged / "model.safetensors").stat().st_size == size // 2
    assert (damaged / "trainer_state.pt").read_bytes() == b"not a checkpoint"
    kept = list_checkpoints(run)
    assert [step for step, _ in kept] == [9, 12], kept
    assert all(verify_checkpoint(folder) is None for _, folder in kept)
    assert not list(checkpoints.glob(".tmp-*"))

    expected = read_metrics(uninterrupted / "metrics.jsonl")
    got = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 13))
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]
    final = load_file(str(run / "model" / "model.safetensors"))
    reference = load_file(str(uninterrupted / "model" / "model.safetensors"))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_resume_without_checkpoint_starts_fresh_with_warning(tmp_path, caplog):
    torch.manual_seed(0)
    trainer = Trainer(ToyLM(), ToyData(), config(steps=2), tmp_path / "run", resume=True)
    with caplog.at_level("WARNING", logger="pretrainkit.training.trainer"):
        summary = trainer.fit()
    assert "no checkpoint" in caplog.text and summary["steps"] == 2


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    train(tmp_path, steps=2)
    with pytest.raises(ConfigError, match="resume=True"):
        train(tmp_path, steps=2)


def test_evaluate_callback_logs_dev_metrics_and_plots(tmp_path):
    seen = []

    def evaluate(model: nn.Module) -> dict[str, float]:
        seen.append((model.training, torch.is_grad_enabled()))
        return {"accuracy": 0.25 * len(seen)}

    torch.manual_seed(0)
    model = ToyLM()
    cfg = config(steps=4, eval_every=2)
    summary = Trainer(model, ToyData(), cfg, tmp_path / "run", evaluate=evaluate).fit()
    assert seen == [(False, False), (False, False)] and model.training
    assert summary["last_eval"] == {"accuracy": 0.5}
    dev = [r for r in records(tmp_path / "run") if "dev/accuracy" in r]
    assert dev == [{"step": 2, "dev/accuracy": 0.25}, {"step": 4, "dev/accuracy": 0.5}]

    paths = plot_run(tmp_path / "run")
    names = sorted(p.name for p in paths)
    assert names == ["dev_accuracy.png", "grad_norm.png", "loss.png", "lr.png", "tokens_per_s.png"]
    assert all(p.parent == tmp_path / "run" / "plots" for p in paths)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_plot_errors_on_missing_or_empty_metrics(tmp_path):
    with pytest.raises(PretrainkitError, match="not found"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PretrainkitError, match="no metric records"):
        plot_run(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"steps": True}, "steps must be a positive integer"),
        ({"lr": 0.0}, "lr must be a positive"),
        ({"lr": float("nan")}, "lr must be a positive"),
        ({"accumulate": 0}, "accumulate must be an integer >= 1"),
        ({"warmup": 20, "steps": 10}, r"warmup \(20\) is longer than steps \(10\)"),
        ({"scheduler": "cosin"}, "unknown scheduler 'cosin' \\(did you mean 'cosine'\\?\\); valid"),
        ({"precision": "bf61"}, "did you mean 'bf16'.*auto, fp32, bf16, fp16"),
        ({"clip_grad": -1.0}, "clip_grad must be a positive number or None"),
        ({"betas": (0.9, 1.5)}, r"betas must be two numbers in \[0, 1\)"),
        ({"keep_last": 0}, "keep_last must be an integer >= 1"),
        ({"log_every": 0}, "log_every must be an integer >= 1"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda"),
    ],
)
def test_train_config_rejects_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"steps": 10, **overrides})


def test_train_config_defaults_and_list_betas():
    cfg = TrainConfig(steps=5, betas=[0.8, 0.9])
    assert cfg.betas == (0.8, 0.9) and cfg.scheduler == "linear" and cfg.clip_grad == 1.0
    assert "skip_nonfinite" in TrainConfig.field_names()
