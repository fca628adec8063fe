"""Checkpoints received from elsewhere or damaged on disk (DESIGN.md §7): verified against their
manifest before use, a damaged newest one skipped (and kept), DeepSpeed's pickles never read
unless the user trusts the run folder, temporaries of live processes left alone."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import invoke, needs
from safetensors.torch import load_file
from test_training import ToyData, ToyLM, config, records

from pretrainkit.distributed import ParallelConfig
from pretrainkit.errors import CheckpointError
from pretrainkit.training import Trainer
from pretrainkit.training.checkpoint import (
    find_resumable,
    list_checkpoints,
    remove_leftovers,
    verify_checkpoint,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]
TRAINER_LOG = "pretrainkit.training.trainer"


def run_toy(run: Path, steps: int = 6, resume: bool = False, **options) -> Trainer:
    """The toy model, 6 steps, a checkpoint every 2 (the last 3 kept)."""
    torch.manual_seed(0)
    cfg = config(steps=steps, save_every=2, keep_last=3)
    trainer = Trainer(ToyLM(), ToyData(), cfg, run, resume=resume, **options)
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    run_toy(run)
    return run


@pytest.fixture
def run(tmp_path, reference) -> Path:
    """A copy of the finished reference run, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    return copy


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in records(run)]


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def truncate(path: Path) -> int:
    size = path.stat().st_size // 2
    with path.open("r+b") as file:
        file.truncate(size)
    return size


def test_manifest_check_names_the_file_and_what_differs(run):
    folder = run / "checkpoints" / "step-00000006"
    assert verify_checkpoint(folder) is None
    # Files the manifest does not list are ignored (and never read).
    (folder / "notes.txt").write_text("mine")
    (folder / "extra.safetensors").write_bytes(b"\0" * 8)
    assert verify_checkpoint(folder) is None

    weights = folder / "model.safetensors"
    full = weights.stat().st_size
    half = truncate(weights)
    assert verify_checkpoint(folder) == (
        f"model.safetensors has {half} bytes, manifest.json says {full}"
    )
    state = folder / "trainer_state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 1  # one bit, same size
    state.write_bytes(bytes(data))
    (folder / "data_state.json").unlink()
    assert verify_checkpoint(folder) == (
        "data_state.json is missing; "
        f"model.safetensors has {half} bytes, manifest.json says {full}; "
        "trainer_state.pt has other contents than manifest.json lists (SHA-256 differs)"
    )

    manifest = folder / "manifest.json"
    listed = json.loads(manifest.read_text())
    listed["files"]["../../../elsewhere"] = {"size": 1, "sha256": "0" * 64}
    manifest.write_text(json.dumps(listed))
    assert "'../../../elsewhere' in manifest.json points outside the checkpoint" in (
        verify_checkpoint(folder) or ""
    )
    manifest.write_text('{"format": ')
    assert (verify_checkpoint(folder) or "").startswith("manifest.json is unreadable")
    manifest.unlink()
    assert (verify_checkpoint(folder) or "").startswith("no manifest.json, so its files cannot")


def test_resume_skips_a_damaged_latest_checkpoint_and_keeps_it(run, reference, caplog):
    checkpoints = run / "checkpoints"
    # The newest checkpoint's weights cut short, as by a full disk or a bad copy.
    half = truncate(checkpoints / "step-00000006" / "model.safetensors")
    with caplog.at_level(logging.INFO, logger=TRAINER_LOG):
        trainer = run_toy(run, resume=True)
    assert trainer._resumed_from == checkpoints / "step-00000004" and trainer.model.calls == 2
    warning = (
        f"checkpoint {checkpoints / 'step-00000006'} is damaged (model.safetensors has {half} "
        "bytes, manifest.json says"
    )
    assert warning in caplog.text and "resuming from step-00000004 instead" in caplog.text
    assert "kept as step-00000006.damaged" in caplog.text
    damaged = checkpoints / "step-00000006.damaged"
    assert (damaged / "model.safetensors").stat().st_size == half
    # Steps 5 and 6 were trained again and give exactly the uninterrupted run.
    assert losses(run) == losses(reference) and len(losses(run)) == 6
    assert same_weights(run / "model", reference / "model")
    assert verify_checkpoint(checkpoints / "step-00000006") is None

    # Rotation never deletes the damaged one; later resumes no longer look at it.
    run_toy(run, steps=12, resume=True)
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["step-00000006.damaged", "step-00000008", "step-00000010", "step-00000012"]
    assert (damaged / "model.safetensors").stat().st_size == half


def test_no_intact_checkpoint_is_an_error_listing_each_and_changes_nothing(run):
    checkpoints = run / "checkpoints"
    for name in ("step-00000002", "step-00000004", "step-00000006"):
        (checkpoints / name / "trainer_state.pt").write_bytes(b"garbage")
    before = sorted(p.name for p in checkpoints.iterdir())
    with pytest.raises(CheckpointError) as info:
        run_toy(run, resume=True)
    message = str(info.value)
    assert message.startswith(f"{run}: no intact checkpoint to resume from (step-00000006: ")
    assert all(f"{name}: trainer_state.pt has 7 bytes" in message for name in before)
    assert sorted(p.name for p in checkpoints.iterdir()) == before


def test_checkpoint_without_manifest_resumes_only_when_trusted(run, reference, caplog):
    # As written by a pretrainkit before manifests: nothing to verify its files against.
    for _, folder in list_checkpoints(run):
        (folder / "manifest.json").unlink()
    (run / "checkpoints" / "step-00000006").rename(run / "checkpoints" / "step-00000006.away")
    with pytest.raises(CheckpointError, match="--trust-checkpoint resumes from it unverified"):
        run_toy(run, resume=True)
    assert len(list_checkpoints(run)) == 2  # nothing set aside after a refusal
    trusted = ParallelConfig("single", trust_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger=TRAINER_LOG):
        trainer = run_toy(run, resume=True, strategy=trusted)
    assert trainer._resumed_from == run / "checkpoints" / "step-00000004"
    assert trainer.model.calls == 2
    assert "without verifying it (no manifest.json; --trust-checkpoint)" in caplog.text
    assert losses(run) == losses(reference)
    assert same_weights(run / "model", reference / "model")


def test_trust_never_accepts_files_that_differ_from_their_manifest(run):
    truncate(run / "checkpoints" / "step-00000006" / "model.safetensors")
    chosen, skipped = find_resumable(run, trust_unverified=True)
    assert chosen == run / "checkpoints" / "step-00000004"
    assert [folder.name for folder, _ in skipped] == ["step-00000006"]


def test_damaged_files_behind_a_matching_manifest_are_an_error_not_a_traceback(run):
    # A crafted folder can list damaged files; loading them still fails cleanly.
    folder = run / "checkpoints" / "step-00000006"
    truncate(folder / "model.safetensors")
    write_manifest(folder, 6)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a valid safetensors"):
        run_toy(run, resume=True)
    (folder / "trainer_state.pt").write_bytes(b"PK garbage")
    write_manifest(folder, 6)
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt: cannot be loaded safely"):
        run_toy(run, resume=True)


def test_leftovers_of_live_processes_stay(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                              capture_output=True, check=True)  # fmt: skip
    dead = int(finished.stdout)
    live = tmp_path / f".tmp-step-00000004-{os.getpid()}"
    stale = tmp_path / f".tmp-step-00000002-{dead}"
    stale_file = tmp_path / f".tmp-model-{dead}"
    for path in (live, stale):
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"partial")
    stale_file.write_bytes(b"partial")
    mine = tmp_path / ".tmp-notes"  # not a temporary of ours: no pid
    mine.mkdir()
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name])


def test_trust_checkpoint_is_an_option_of_the_training_commands(capsys):
    assert ParallelConfig().trust_checkpoint is False
    code, out, _ = invoke(capsys, "pretrain", "--help")
    assert code == 0 and "--trust-checkpoint | --no-trust-checkpoint" in " ".join(out.split())
    with pytest.raises(ValueError, match="trust_checkpoint must be true or false"):
        ParallelConfig(trust_checkpoint="yes")  # type: ignore[arg-type]


# -- DeepSpeed in one process: our safetensors copy, and DeepSpeed's pickles only on trust ----

NEEDS_DEEPSPEED = needs("deepspeed")

DS_RUNNER = """
import importlib.util, sys
from pathlib import Path
import torch
from pretrainkit.distributed import ParallelConfig
from pretrainkit.training import TrainConfig, Trainer

spec = importlib.util.spec_from_file_location("toy", {test_file!r})
toy = sys.modules["toy"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toy)
out_dir, resume, trust, native = sys.argv[1], *(a == "1" for a in sys.argv[2:5])
torch.set_num_threads(1)
torch.manual_seed(0)
config = TrainConfig(steps=6, lr=1e-2, save_every=3, log_every=1, precision="fp32",
                     device="cpu", progress=False, keep_last=2)
strategy = ParallelConfig("deepspeed", zero_stage=2, trust_checkpoint=trust)
trainer = Trainer(toy.ToyLM(), toy.ToyData(), config, out_dir, resume=resume, strategy=strategy)
if native:  # also DeepSpeed's own checkpoint, as earlier pretrainkit versions wrote it
    ours = trainer.engine.save_shards

    def both(directory):
        ours(directory)
        trainer.engine.ds.save_checkpoint(str(Path(directory) / "deepspeed"), tag="state",
                                          save_latest=False)

    trainer.engine.save_shards = both
trainer.fit()
resumed = trainer._resumed_from.name if trainer._resumed_from else None
print(f"resumed from {{resumed}}, {{trainer.model.calls}} forward passes")
"""


class Plant:
    """Unpickling it creates a folder: the stand-in for code a planted pickle would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant_pickles(state: Path, marker: Path, ranks: int) -> list[Path]:
    """Replace DeepSpeed's checkpoint files in ``state`` by planted pickles of the same names."""
    state.mkdir(parents=True, exist_ok=True)
    names = ["mp_rank_00_model_states.pt"]
    names += [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(ranks)]
    for name in names:
        torch.save(Plant(marker), state / name)
    return [state / name for name in names]


def ds_run(tmp_path: Path, run: Path, resume=False, trust=False, native=False):
    runner = tmp_path / "ds_runner.py"
    if not runner.exists():
        runner.write_text(DS_RUNNER.format(test_file=str(REPO / "tests" / "test_training.py")))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")
        ),
    }
    flags = [str(int(flag)) for flag in (resume, trust, native)]
    return subprocess.run(
        [sys.executable, str(runner), str(run), *flags],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def interrupted_at_step_3(source: Path, copy: Path) -> Path:
    """``source`` as if killed right after its step-3 checkpoint; returns that checkpoint."""
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "checkpoints" / "step-00000006")
    shutil.rmtree(copy / "model")
    kept = (copy / "metrics.jsonl").read_text().splitlines()[:3]
    (copy / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    return copy / "checkpoints" / "step-00000003"


@NEEDS_DEEPSPEED
def test_deepspeed_resumes_from_safetensors_and_reads_pickles_only_on_trust(tmp_path):
    reference = tmp_path / "reference"
    done = ds_run(tmp_path, reference, native=True)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = losses(reference)
    assert len(expected) == 6 and expected[-1] < expected[0]
    files = {p.name for p in (reference / "checkpoints" / "step-00000003" / "deepspeed").iterdir()}
    assert {"state", "zero-rank-00000.safetensors", "zero.json"} <= files

    # Someone hands us the run with DeepSpeed's files replaced by planted pickles, and a
    # manifest that matches them: resume reads our safetensors copy and never unpickles them.
    marker = tmp_path / "code-ran"
    planted = interrupted_at_step_3(reference, tmp_path / "planted")
    plant_pickles(planted / "deepspeed" / "state", marker, ranks=1)
    write_manifest(planted, 3)
    done = ds_run(tmp_path, planted.parents[1], resume=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists()
    assert "resumed from step-00000003, 3 forward passes" in done.stdout
    assert losses(planted.parents[1]) == expected  # steps 4-6 trained again, exactly
    assert same_weights(planted.parents[1] / "model", reference / "model")

    # Only DeepSpeed's own files (an older pretrainkit's checkpoint): refused...
    legacy = interrupted_at_step_3(reference, tmp_path / "legacy")
    for name in ("zero.json", "zero-rank-00000.safetensors"):
        (legacy / "deepspeed" / name).unlink()
    write_manifest(legacy, 3)
    done = ds_run(tmp_path, legacy.parents[1], resume=True)
    assert done.returncode != 0
    assert "which DeepSpeed reads with pickle" in done.stderr, done.stderr
    assert "resume with --trust-checkpoint" in done.stderr
    # ...and with --trust-checkpoint, DeepSpeed loads them and the run continues exactly.
    done = ds_run(tmp_path, legacy.parents[1], resume=True, trust=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loading DeepSpeed's pickle files (--trust-checkpoint)" in done.stderr
    assert "resumed from step-00000003, 3 forward passes" in done.stdout
    assert losses(legacy.parents[1]) == expected
    assert same_weights(legacy.parents[1] / "model", reference / "model")
