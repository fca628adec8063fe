"""Small fixtures shared by the end-to-end tests: synthetic corpora, task files, CLI runners."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import torch

from pretrainkit.cli.main import main
from pretrainkit.errors import PretrainkitError
from pretrainkit.paths import ENV as DATA_ENV
from pretrainkit.paths import find_data_dir

# scripts/test.sh (CI) sets it: a dev dependency or the data mirror that is missing is a
# failure there, not a skip that nobody reads.
STRICT_ENV = "PRETRAINKIT_STRICT_TESTS"


def strict() -> bool:
    return os.environ.get(STRICT_ENV) == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test (or the module, when called at import) with ``reason``; fail in strict mode."""
    __tracebackhide__ = True  # report the test's line, not this one
    if strict():
        pytest.fail(f"{reason} [{STRICT_ENV}=1 turns this skip into a failure]", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(module_name: str, reason: str = "") -> ModuleType:
    """Import and return ``module_name``, a dev dependency: like ``pytest.importorskip``, but a
    failure when ``PRETRAINKIT_STRICT_TESTS=1``.

    Only the module itself (or a parent package) being absent skips; an installed module whose
    import breaks raises its error, as any test code would.
    """
    __tracebackhide__ = True
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        parts = module_name.split(".")
        if error.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise
    what = f"{module_name} ({reason})" if reason else module_name
    unavailable(f"{what} is not installed; it is a dev dependency: pip install -e '.[dev]'")


def needs(module_name: str) -> pytest.MarkDecorator:
    """A mark for tests that need dev dependency ``module_name``: skipped when it is absent,
    except in strict mode, where the test runs and fails on the missing import."""
    absent = importlib.util.find_spec(module_name) is None
    return pytest.mark.skipif(
        absent and not strict(), reason=f"{module_name} is not installed (pip install -e .[dev])"
    )


def data_dir(*required: str) -> Path:
    """The data mirror (``$PRETRAINKIT_DATA``, else ``../shared/data``), holding ``required``
    sub-paths: the test skips with the reason when it is absent, and fails in strict mode."""
    __tracebackhide__ = True
    explicit = None
    if not os.environ.get(DATA_ENV):
        # Beside this checkout, whatever the working directory.
        beside = Path(__file__).resolve().parents[1].parent / "shared" / "data"
        explicit = beside if beside.is_dir() else None
    try:
        return find_data_dir(explicit, required=required)
    except PretrainkitError as error:
        message = str(error).replace("(from --data)", "(beside the checkout)")
    unavailable(f"data mirror, for {', '.join(required) or 'this test'}: {message}")


# A tiny BERT: 2 layers, hidden 64, 2 heads; targets are added per test.
TINY_MODEL = [
    "--model",
    "bert-tiny",
    "--model.hidden_size",
    "64",
    "--model.encoder.num_heads",
    "2",
    "--model.encoder.ffn_size",
    "128",
    "--model.embedding.max_positions",
    "64",
]
MLM_ONLY = ["--model.targets", "[{name: mlm}]"]
QUIET = ["--precision", "fp32", "--no-progress"]

# Adjective and noun always come together, so a masked noun is predictable from its adjective.
PAIRS = [
    ("big", "horse"),
    ("small", "mouse"),
    ("red", "fox"),
    ("old", "farmer"),
    ("happy", "child"),
    ("quiet", "owl"),
]
VERBS = ["sees", "likes", "follows", "feeds", "helps", "calls"]
POSITIVE = ["great", "good", "lovely", "wonderful"]
NEGATIVE = ["bad", "awful", "boring", "terrible"]


def sentence(rng: random.Random) -> str:
    (a, n), (b, m) = rng.choice(PAIRS), rng.choice(PAIRS)
    return f"the {a} {n} {rng.choice(VERBS)} the {b} {m} ."


def write_corpus(path: Path, documents: int = 80, seed: int = 0, reviews: bool = False) -> Path:
    """Plain-text corpus: documents of 3-5 grammar sentences, a blank line between documents.

    With ``reviews`` every sentence ends with one cue word, so that the vocabulary learns the
    words the classification files use.
    """
    rng = random.Random(seed)
    lines = []
    for _ in range(documents):
        for _ in range(rng.randint(3, 5)):
            text = sentence(rng)
            if reviews:
                text = f"{text[:-2]} and it was {rng.choice(POSITIVE + NEGATIVE)} ."
            lines.append(text)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_classification(
    path: Path, rows: int, seed: int, pairs: bool = False, flip_every: int = 0
) -> list[str]:
    """A separable task file: the label is whether the cue word is positive.

    Single sentences: header ``label<TAB>text_a``, labels 0/1. Pairs: header
    ``label<TAB>text_a<TAB>text_b``, labels neg/pos, the cue in ``text_b``. With
    ``flip_every`` N, rows 0, N, 2N, ... carry the wrong label (a perfect model scores 1 - 1/N).

    Returns:
        The labels in row order, as written.
    """
    rng = random.Random(seed)
    labels = []
    lines = ["label\ttext_a\ttext_b" if pairs else "label\ttext_a"]
    for row in range(rows):
        positive = rng.random() < 0.5
        cue = rng.choice(POSITIVE if positive else NEGATIVE)
        if flip_every and row % flip_every == 0:
            positive = not positive
        if pairs:
            label = "pos" if positive else "neg"
            lines.append(f"{label}\t{sentence(rng)}\tit was {cue} .")
        else:
            label = "1" if positive else "0"
            lines.append(f"{label}\t{sentence(rng)[:-2]} and it was {cue} .")
        labels.append(label)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return labels


def cli(*argv: object) -> None:
    """Run ``pretrainkit ARGV`` in this process and require success (for fixtures)."""
    code = main([str(a) for a in argv])
    assert code == 0, f"pretrainkit {' '.join(map(str, argv))} exited with {code}"


def invoke(capsys, *argv: object) -> tuple[int, str, str]:
    """Run ``pretrainkit ARGV`` in this process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop what earlier steps printed
    crash = ""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse: --help and usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # what `python -m pretrainkit` would die of: a traceback and exit code 1
        code, crash = 1, traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err + crash


def last_json(out: str) -> dict:
    """The JSON result a command prints last (after any progress lines)."""
    start = out.rindex("\n{\n") + 1 if "\n{\n" in out else out.index("{\n")
    return json.loads(out[start:])


def read_metrics(run: Path) -> list[dict]:
    """The training records (those with a loss) of ``run/metrics.jsonl``, in file order."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def subprocess_env() -> dict[str, str]:
    """One thread per process: the test machine has two shared cores."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def popen_cli(*argv: object, log: Path) -> subprocess.Popen:
    """Start ``python -m pretrainkit ARGV`` with stdout and stderr going to ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "pretrainkit", *map(str, argv)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=subprocess_env(),
        )


class OneThread:
    """Context manager: torch on one thread (two threads on a loaded 2-core box are ~7x slower)."""

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def text_batch(model, texts: list[str]) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``texts`` through ``model.tokenizer``'s template,
    right-padded with 0 to the longest."""
    rows = [model.tokenizer.build_inputs(ids)[0] for ids in model.tokenizer.encode_batch(texts)]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return {"input_ids": ids, "attention_mask": mask}


def torchrun(processes: int, *argv: str, log: Path, module: bool = True) -> None:
    """``torchrun --standalone --nproc-per-node N [-m pretrainkit] ARGV`` on CPU (gloo, one
    thread per process); fails with the end of its log."""
    import pretrainkit

    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(pretrainkit.__file__).parents[1])] + sys.path),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # DeepSpeed: the CPU accelerator; the one op it compiles (shared-memory all-reduce,
        # about a minute, once) is cached inside the checkout.
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(repo / ".cache" / "torch_extensions")
        ),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    target = ["-m", "pretrainkit"] if module else []
    with log.open("wb") as sink:
        done = subprocess.run(
            [*command, str(processes), *target, *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=600,
        )
    assert done.returncode == 0, log.read_text(errors="replace")[-6000:]


def run_losses(run: Path) -> dict[int, float]:
    """Step → logged loss of a run folder's metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r.get("loss") is not None}


def cut_at_step_10(run: Path, copy: Path) -> Path:
    """A copy of a 20-step ``run`` (saved every 10) as if killed right after its step-10
    checkpoint: the later checkpoint, the final model and the later metrics are gone."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-00000020")
    shutil.rmtree(copy / "model")
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 10]
    (copy / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    return copy


# The distributed-layout tests (DDP, FSDP, ZeRO, TP, PP, resume on another layout, sharded
# checkpoints) compare runs of a tiny MLM model over the same shards, 20 steps of 8 sequences.
LAYOUT_STEPS = 20
LAYOUT_BATCH = 8
NO_DROPOUT = ["--model.embedding.dropout", "0", "--model.encoder.dropout", "0"]
MLM = ["--model.targets", "[{name: mlm}]"]


def layout_shards(root: Path, objective: str = "mlm", name: str = "shards") -> Path:
    """``ROOT/NAME``: shards of a 200-document corpus (``objective``, length 32) with a
    200-piece WordPiece vocabulary, both made once per ``root``."""
    corpus, tokenizer = root / "corpus.txt", root / "tok"
    if not corpus.is_file():
        write_corpus(corpus, documents=200)
    if not tokenizer.is_dir():
        cli("vocab", "--corpus", corpus, "--kind", "wordpiece", "--size", 200, "--out", tokenizer)
    cli(
        "preprocess", "--corpus", corpus, "--tokenizer", tokenizer, "--objective", objective,
        "--seq-length", 32, "--out", root / name,
    )  # fmt: skip
    return root / name


def layout_args(
    shards: Path, out: Path, *extra: object, model: list[str] | None = None, dropout=NO_DROPOUT
) -> list[str]:
    """``pretrain`` of the layout tests: 20 steps, global batch 8, lr 1e-3, a checkpoint every
    10 steps (the last two kept), dropout off so that layouts agree step by step."""
    model = model if model is not None else [*TINY_MODEL, *MLM]
    return [
        "pretrain", *model, *dropout, "--data", str(shards), "--out", str(out),
        "--steps", str(LAYOUT_STEPS), "--global-batch-size", str(LAYOUT_BATCH), "--lr", "1e-3",
        "--log-every", "1", "--save-every", "10", "--keep-last", "2", *QUIET, *map(str, extra),
    ]  # fmt: skip


NO_DROPOUT_AT_ALL = [*NO_DROPOUT, "--model.encoder.attention_dropout", "0"]


def tiny_llama(layers: int = 2) -> list[str]:
    """``pretrain`` model options of a tiny LLaMA (hidden 64, 4 query / 2 key-value heads)."""
    return [
        "--model", "llama", "--model.hidden_size", "64", "--model.encoder.num_heads", "4",
        "--model.encoder.num_kv_heads", "2", "--model.encoder.ffn_size", "128",
        "--model.encoder.num_layers", str(layers), "--model.embedding.max_positions", "64",
    ]  # fmt: skip


def run_metric(run: Path, name: str) -> dict[int, float]:
    """Step → the logged value of ``name`` in ``run``'s metrics.jsonl."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[name] for r in map(json.loads, lines) if name in r}


def loaded_mlm_outputs(run_model: Path, reference_model: Path) -> tuple[Any, Any]:
    """Two saved MLM models loaded in one process (eval mode) and run on the same two
    labelled sentences: (output, reference output). The run's model must hold its saved
    weights exactly, its MLM decoder tied to its word embedding again."""
    from safetensors.torch import load_file

    import pretrainkit

    model, reference = pretrainkit.load(run_model), pretrainkit.load(reference_model)
    assert model.targets["mlm"].decoder.weight is model.embedding.parts["word"].weight
    saved, loaded = load_file(str(run_model / "model.safetensors")), model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in saved.items())
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 40, 41, 3, 0]])
    labels = torch.where(ids > 3, ids, torch.full_like(ids, -100))
    with torch.no_grad():
        got = model(ids, attention_mask=(ids > 0).long(), labels=labels)
        expected = reference(ids, attention_mask=(ids > 0).long(), labels=labels)
    return got, expected


def layout_refusal(capsys, monkeypatch, world: int, args: list[str]) -> tuple[int, str]:
    """``pretrain ARGS`` as rank 0 of a torchrun launch of ``world`` processes would start it,
    in this process (every layout check runs before a process group exists): (code, stderr)."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    code, _, err = invoke(capsys, *args)
    return code, err
