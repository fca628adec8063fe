"""The command line answers ``--help`` without importing torch (issue 12: < 0.5 s), and a
command that runs still gets every library it imports, loaded before it starts.

Run in fresh interpreters: in this test process torch is already imported, so the deferral of
``cli/deferred.py`` would never happen here. Times are not asserted (benchmarks measure them);
what is asserted is that the heavy libraries were not executed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pretrainkit.cli.commands import COMMANDS

PROBE = """
import contextlib, io, json, sys
from pretrainkit.cli import deferred
deferred.defer()  # as cli/entry.py does
from pretrainkit.cli.main import main

loaded = {}
for words in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(words)
        except SystemExit:
            pass
    loaded[" ".join(words)] = sorted(
        name for name in deferred.HEAVY
        if name in sys.modules and type(sys.modules[name]) is not deferred._Deferred
    )
print(json.dumps(loaded))
"""


def probe(lines: list[list[str]]) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(lines)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)


def test_help_of_every_command_loads_no_heavy_library() -> None:
    lines = [["--help"]] + [[name, "--help"] for name in COMMANDS]
    loaded = probe(lines)
    assert set(loaded) == {" ".join(words) for words in lines}
    assert {line: names for line, names in loaded.items() if names} == {}


def test_a_mistyped_flag_is_refused_without_loading_torch() -> None:
    loaded = probe([["finetune", "--model", "m", "--trian", "x"], ["pretrain", "--nope"]])
    assert loaded == {"finetune --model m --trian x": [], "pretrain --nope": []}


def test_a_command_that_runs_has_its_libraries_loaded(tmp_path: Path) -> None:
    """``init`` builds a torch model and writes a tokenizer: through the deferred start-up
    (a fresh ``python -m pretrainkit``) it writes the same folder as ever."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]) + "\n"
    )
    out = tmp_path / "model"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pretrainkit",
            "init",
            "--model",
            "bert-tiny",
            "--tokenizer",
            str(vocab),
            "--out",
            str(out),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parameters"] > 0
    assert (out / "model.safetensors").is_file() or any(out.glob("*.safetensors"))
    from pretrainkit import load

    model = load(out)
    assert model.config.vocab_size == 8


def test_preprocess_never_imports_torch(tmp_path: Path) -> None:
    """`preprocess` needs the tokenizer and numpy, not torch: it is never executed."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b a b\nb a\n\na a b\n" * 50)
    out = tmp_path / "shards"
    line = ["preprocess", "--corpus", str(corpus), "--tokenizer", str(vocab), "--objective",
            "mlm", "--seq-length", "16", "--out", str(out), "--workers", "1", "--threads", "1"]  # fmt: skip
    loaded = probe([line])
    assert (out / "tokens.bin").is_file()
    assert "torch" not in loaded[" ".join(line)]
    assert {"numpy", "tokenizers"} <= set(loaded[" ".join(line)])


def test_the_families_in_convert_help_are_the_registry() -> None:
    from pretrainkit.cli.commands import CONVERT_FAMILIES
    from pretrainkit.convert import family_names

    assert list(CONVERT_FAMILIES) == family_names(), (
        "a family was added to or removed from convert/: update CONVERT_FAMILIES in cli/commands.py"
    )


def test_threads_of_a_torch_free_command_cap_the_tokenizer(monkeypatch) -> None:
    """`vocab` / `preprocess --threads N` sets RAYON_NUM_THREADS (read by `tokenizers` when its
    thread pool starts, at the first parallel call) instead of importing torch."""
    import os

    from pretrainkit.cli.main import _set_threads

    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    _set_threads(1, torch_free=True)
    assert os.environ["RAYON_NUM_THREADS"] == "1"


FIRST_STEP_PROBE = """
import json, sys
from pretrainkit.cli.main import main
from pretrainkit.distributed import engines

seen = []
step = engines.Engine.step

def recording(self, max_norm):
    seen.append("torch.distributed.checkpoint" in sys.modules)
    return step(self, max_norm)

engines.Engine.step = recording
main(json.loads(sys.argv[1]))
print(json.dumps({"at_steps": seen, "at_end": "torch.distributed.checkpoint" in sys.modules}))
"""


def test_a_one_process_run_steps_before_importing_distributed_checkpoint(tmp_path: Path) -> None:
    """torch.distributed.checkpoint (DTensor, planners: 1.3-1.6 s to import on a 2-core CPU)
    is imported when the first checkpoint is written, not before the first step."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b a b\nb a\n\na a b\n" * 50)
    shards = tmp_path / "shards"
    subprocess.run(
        [sys.executable, "-m", "pretrainkit", "preprocess", "--corpus", str(corpus),
         "--tokenizer", str(vocab), "--objective", "mlm", "--seq-length", "16", "--out",
         str(shards), "--workers", "1"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    line = ["pretrain", "--model", "bert-tiny", "--model.targets", "[{name: mlm}]", "--data",
            str(shards), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4",
            "--no-progress", "--threads", "1"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", FIRST_STEP_PROBE, json.dumps(line)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"at_steps": [False, False], "at_end": True}
    assert (tmp_path / "run" / "model").is_dir()
