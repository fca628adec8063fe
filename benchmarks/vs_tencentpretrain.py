"""pretrainkit vs TencentPretrain side by side: CLI start-up, preprocess, pretrain, finetune.

Both systems run as subprocesses on this machine, on the same corpus, vocabulary, model shape,
batch and thread count; the script prints markdown tables, the command lines and a JSON summary
(also written to --json PATH).

    python benchmarks/vs_tencentpretrain.py --work /tmp/vs-tp --json /tmp/vs-tp.json
    python benchmarks/vs_tencentpretrain.py --only pretrain --presets bert-tiny --rounds 1 \\
        --steps 12 --report-every 4 --skip-steps 4          # a quick smoke run

TencentPretrain (default ../shared/anchors/tencentpretrain) is copied into the work folder and
run from there with the same interpreter; it is never imported. Both systems get the same
OMP_NUM_THREADS / MKL_NUM_THREADS (--threads) and pretrainkit also gets ``--threads``. Every
run records the 1-minute load average (os.getloadavg) at its start and end; each table row shows
the range over its rounds. Everything is written
under --work (default: a fresh temporary folder); the script deletes only what it created itself
(earlier rounds' preprocess outputs and run folders; logs are kept; --keep-all keeps all).

What each part measures (--only help,preprocess,pretrain,finetune; default all):

help
    Wall time of whole processes (interpreter start included) of ``pretrainkit --help``,
    ``pretrainkit pretrain --help``, ``pretrainkit finetune --help``, and TencentPretrain's
    ``pretrain.py --help`` and ``finetune/run_classifier.py --help`` for reference: one untimed
    warm-up pass, then --help-runs interleaved passes; the median is reported.

preprocess
    Wall time of a whole process (interpreter and worker start included) of TencentPretrain
    ``preprocess.py --data_processor bert --seq_length 128 --processes_num W`` and
    ``pretrainkit preprocess --objective bert --seq-length 128 --workers W`` on the same corpus
    and vocabulary, interleaved rounds, median; the output size (TencentPretrain's dataset file,
    every file of pretrainkit's shard folder) relative to the corpus size. TencentPretrain runs
    with its own defaults, i.e. static masking with ``--dup_factor`` 5 masked copies of every
    instance unless --tp-dup-factor says otherwise; pretrainkit masks when it loads a batch.
    --make-corpus-mb N writes a corpus of about N MB into the work folder by repeating --corpus
    (a blank line between copies, so documents stay apart) and preprocesses that instead.

pretrain
    Steps/s of BERT MLM + NSP pre-training, batch --batch-size x --seq-length (32 x 128), per
    preset: TencentPretrain ``pretrain.py`` with models/bert/<size>_config.json (a config with
    the preset's shape is written into the work folder when the file is missing or differs)
    in fp32, pretrainkit ``pretrain`` in fp32 and bf16 (TencentPretrain has no bf16/fp16 switch
    outside DeepSpeed; the script checks its option list and reports the probe's error). Both
    systems report every --report-every steps; the rate is taken between the report at
    --skip-steps and the last one (at --steps), so start-up and the first warm-up steps are out:
      - TencentPretrain: its report line prints batch x seq x report_steps / seconds since the
        previous report (its own time.time(), reset right after each report), so the seconds of
        each window are batch x seq x report_steps / tokens_per_s; steps/s =
        (steps - skip) / (sum of the windows after --skip-steps).
      - pretrainkit: metrics.jsonl has ``elapsed`` (seconds since its training loop started) at
        every logged step; steps/s = (steps - skip) / (elapsed[steps] - elapsed[skip]).
    Both are wall-clock times of the training loop (data loading, optimizer and scheduler
    included); TencentPretrain's windows leave out the print of its report line, pretrainkit's
    include the write of its metrics line (well under 1 % of a step either way).
    first report: seconds from process start (just before the fork) until the first report is
    visible from outside: TencentPretrain's report line read from its stderr pipe, pretrainkit's
    first metrics.jsonl line (the file polled every 10 ms). With --report-every 1 this is the
    time from process start to the first optimizer step done.
    to loop start: first report minus the first report window's seconds by the system's own
    clock (TencentPretrain: batch x seq x step / its first tokens/s, a window that starts when
    its Trainer is built, just before the loop; pretrainkit: ``elapsed`` of its first record),
    i.e. process start until the training loop begins (imports, model build, data opening).
    Rounds are interleaved: for each round, TencentPretrain fp32, then each pretrainkit variant
    of --pk-precisions (default fp32, bf16; a ``-pack`` variant such as ``fp32-pack`` adds
    ``--pack``: each batch's instances packed into fewer rows, the same instances and loss; a
    row's steps/s then counts the same 32 instances a step with less padding computed).
    Pre-training data: TencentPretrain and pretrainkit preprocess of --corpus (the last round of
    the preprocess part when it ran on the same corpus, else one untimed build).

finetune
    Steps/s of classification fine-tuning on the first steps x batch rows of ChnSentiCorp train
    (seq 128, batch 32): TencentPretrain ``finetune/run_classifier.py`` (fp32) from the model.bin
    its pre-training wrote, pretrainkit ``finetune`` (fp32, bf16) from the pre-training run's
    ``model`` folder (each made by a 1-step pre-training when the pretrain part did not run).
    run_classifier.py only runs whole epochs, so it gets a training file of exactly
    steps x batch rows and ``--epochs_num 1``; it logs "Training steps: i" every --report-every
    steps with a millisecond time stamp (its logger's asctime); steps/s = (steps - skip) /
    (stamp[steps] - stamp[skip]). Its dev evaluation (on 64 dev rows) runs after the last report
    and is not timed; its loop start is the stamp of its "Start training." line (logged before
    the epoch loop; the first epoch's shuffle and tensor building fall in the first window).
    pretrainkit: ``--steps`` on the same file, rate and loop start from metrics.jsonl as above,
    with ``--pooling first`` (TencentPretrain's default pooling). TencentPretrain pads every input
    to 128 tokens; pretrainkit's own batching applies.

Ratios are of medians over rounds (pretrainkit / TencentPretrain; >1 = pretrainkit faster for
rates, for times the ratio is TencentPretrain time / pretrainkit time). A run that fails is
reported with its error and left out; no number is made up for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PY = sys.executable
PARTS = ("help", "preprocess", "pretrain", "finetune")
# (layers, hidden, heads, ffn) of the shapes this benchmark is about; other bert-* presets take
# their shape from pretrainkit's preset.
SHAPES = {
    "bert-tiny": (2, 128, 2, 512),
    "bert-small": (4, 512, 8, 2048),
    "bert-base": (12, 768, 12, 3072),
}
MAX_POSITIONS = 512
# TencentPretrain's report line: "|  10/  40 steps|  1234.56 tokens/s| loss ...".
TP_REPORT = re.compile(r"\|\s*(\d+)/\s*(\d+) steps\|\s*([0-9.]+) tokens/s")
TP_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+\] "
TP_FT_REPORT = re.compile(TP_STAMP + r"Epoch id: (\d+), Training steps: (\d+)")
TP_FT_START = re.compile(TP_STAMP + r"Start training\.")


def stamp(text: str) -> float:
    """TencentPretrain's logger time stamp (asctime, milliseconds) as seconds since the epoch."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def run_record(round_: int, key: str, p: Any, rate: dict) -> dict:
    """One timed run as a JSON row; a failed process gives its exit code and output tail."""
    if p.rc != 0:
        rate = {"error": f"rc {p.rc}: {tail(p.text())}"}
    return {
        "round": round_,
        "system": key,
        "wall_s": p.wall_s,
        "load_1m": p.load_start,
        "load_1m_end": p.load_end,
        **rate,
    }


def tail(lines: list[str], n: int = 6) -> str:
    return " | ".join(line.strip() for line in lines[-n:] if line.strip())


@dataclass
class Proc:
    """One finished subprocess: its command, exit status, wall time and output lines."""

    cmd: list[str]
    cwd: str
    rc: int
    wall_s: float
    load_start: float
    load_end: float
    # (seconds since start when the parent read it, stream, text)
    lines: list[tuple[float, str, str]] = field(default_factory=list)
    first_file_s: float | None = None
    timed_out: bool = False

    def text(self, stream: str | None = None) -> list[str]:
        return [t for _, s, t in self.lines if stream is None or s == stream]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.env = dict(os.environ)
        self.env.update(
            OMP_NUM_THREADS=str(args.threads),
            MKL_NUM_THREADS=str(args.threads),
            PYTHONUNBUFFERED="1",
        )
        self.work: Path = args.work
        self.created: set[Path] = set()
        self.notes: list[str] = []
        self.commands: dict[str, str] = {}
        self.logs = self.new_dir(self.work / "logs")
        self.tp_dir: Path | None = None
        self.corpus: Path = args.corpus
        self.data: dict[str, Path] | None = None  # pre-training data of --corpus
        self.models: dict[str, dict[str, Path]] = {}  # preset -> {"tp": model.bin, "pk": dir}
        self.tp_configs: dict[str, Path] = {}
        self.pk_overrides: dict[str, list[str]] = {}
        self.counter = 0

    # -- files --------------------------------------------------------------------------------

    def fresh(self, path: Path) -> Path:
        """A path that does not exist yet (a numbered suffix when needed), marked as ours."""
        candidate, n = path, 1
        while candidate.exists() or candidate.is_symlink():
            n += 1
            candidate = path.with_name(f"{path.name}.{n}")
        self.created.add(candidate)
        return candidate

    def new_dir(self, path: Path) -> Path:
        path = self.fresh(path)
        path.mkdir(parents=True)
        return path

    def remove(self, path: Path) -> None:
        """Delete a file or folder, only when this script created it."""
        if self.args.keep_all or path not in self.created or not path.exists():
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        self.created.discard(path)

    # -- processes ----------------------------------------------------------------------------

    def run(
        self,
        name: str,
        cmd: list[str],
        cwd: Path,
        watch: Path | None = None,
        kind: str | None = None,
        expect_failure: bool = False,
    ) -> Proc:
        """Run ``cmd``, reading its output line by line with arrival times; ``watch``: a file
        whose first non-empty moment is recorded (polled every 10 ms)."""
        self.counter += 1
        shown = shlex.join(cmd)
        if kind and kind not in self.commands:
            self.commands[kind] = f"(cd {shlex.quote(str(cwd))} && {shown})"
        log(f"$ (cd {cwd} && {shown})")
        lines: list[tuple[float, str, str]] = []
        lock = threading.Lock()
        load_start = load1()
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )

        def reader(stream: Any, label: str) -> None:
            for line in stream:
                with lock:
                    lines.append((time.perf_counter() - start, label, line.rstrip("\n")))
            stream.close()

        threads = [
            threading.Thread(target=reader, args=(proc.stdout, "out"), daemon=True),
            threading.Thread(target=reader, args=(proc.stderr, "err"), daemon=True),
        ]
        for t in threads:
            t.start()
        first_file, timed_out = None, False
        deadline = start + self.args.timeout
        if watch is None:
            try:
                proc.wait(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
        else:
            while proc.poll() is None:
                now = time.perf_counter()
                if first_file is None and watch.is_file() and watch.stat().st_size > 0:
                    first_file = now - start
                if now > deadline:
                    timed_out = True
                    break
                time.sleep(0.01)
        if timed_out:
            proc.kill()  # only the process this script started
            proc.wait()
        wall = time.perf_counter() - start
        for t in threads:
            t.join()
        result = Proc(cmd, str(cwd), proc.returncode, wall, load_start, load1(), lines)
        result.first_file_s = first_file
        result.timed_out = timed_out
        log_path = self.logs / f"{self.counter:03d}-{name}.log"
        with log_path.open("w", encoding="utf-8") as f:
            f.write(f"# cwd {cwd}\n# {shown}\n# rc {proc.returncode} wall {wall:.3f}s\n")
            f.writelines(f"{t:9.3f} {s} {text}\n" for t, s, text in lines)
        if proc.returncode != 0 and not expect_failure:
            log(f"  failed (rc {proc.returncode}): {tail(result.text(), 4)}  [{log_path}]")
        return result

    def tp(self) -> Path:
        """The writable copy of TencentPretrain in the work folder (made once)."""
        if self.tp_dir is None:
            src = self.args.tp
            if not (src / "pretrain.py").is_file():
                raise SystemExit(f"no TencentPretrain at {src} (pretrain.py missing); see --tp")
            dst = self.fresh(self.work / "tencentpretrain")
            shutil.copytree(src, dst)
            for root, dirs, files in os.walk(dst):
                for name in dirs + files:
                    p = Path(root, name)
                    p.chmod(p.stat().st_mode | 0o200)
            dst.chmod(dst.stat().st_mode | 0o200)
            self.tp_dir = dst
            log(f"TencentPretrain copied to {dst}")
        return self.tp_dir

    def pk(self, *args: str) -> list[str]:
        return [PY, "-m", "pretrainkit", *args]

    # -- help ---------------------------------------------------------------------------------

    def part_help(self) -> dict[str, Any]:
        tp = self.tp()
        cmds = [
            ("pretrainkit --help", self.pk("--help"), self.work),
            ("pretrainkit pretrain --help", self.pk("pretrain", "--help"), self.work),
            ("pretrainkit finetune --help", self.pk("finetune", "--help"), self.work),
            ("TencentPretrain pretrain.py --help", [PY, "pretrain.py", "--help"], tp),
            (
                "TencentPretrain finetune/run_classifier.py --help",
                [PY, "finetune/run_classifier.py", "--help"],
                tp,
            ),
        ]
        for label, cmd, cwd in cmds:  # warm-up: page cache, .pyc files
            self.run("help-warmup", cmd, cwd, kind=f"help: {label}")
        times: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        loads: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        errors: dict[str, str] = {}
        for _ in range(self.args.help_runs):
            for label, cmd, cwd in cmds:
                p = self.run("help", cmd, cwd)
                loads[label].append(p.load_start)
                if p.rc == 0:
                    times[label].append(p.wall_s)
                else:
                    errors[label] = tail(p.text())
        rows = []
        for label, _cmd, _ in cmds:
            rows.append(
                {
                    "command": label,
                    "median_s": median(times[label]),
                    "min_s": min(times[label]) if times[label] else None,
                    "runs_s": [round(t, 3) for t in times[label]],
                    "load_1m": loads[label],
                    "error": errors.get(label),
                }
            )
        return {"runs": self.args.help_runs, "rows": rows}

    # -- preprocess ---------------------------------------------------------------------------

    def tp_dup_factor(self) -> int | None:
        if self.args.tp_dup_factor is not None:
            return self.args.tp_dup_factor
        text = (self.tp() / "preprocess.py").read_text(encoding="utf-8", errors="replace")
        m = re.search(r'"--dup_factor",\s*type=int,\s*default=(\d+)', text)
        return int(m.group(1)) if m else None

    def tp_preprocess_cmd(self, corpus: Path, out: Path) -> list[str]:
        cmd = [
            PY,
            "preprocess.py",
            "--corpus_path",
            str(corpus),
            "--vocab_path",
            str(self.args.vocab),
            "--dataset_path",
            str(out),
            "--processes_num",
            str(self.args.workers),
            "--data_processor",
            "bert",
            "--seq_length",
            str(self.args.seq_length),
        ]
        if self.args.tp_dup_factor is not None:
            cmd += ["--dup_factor", str(self.args.tp_dup_factor)]
        return cmd

    def pk_preprocess_cmd(self, corpus: Path, out: Path) -> list[str]:
        return self.pk(
            "preprocess",
            "--corpus",
            str(corpus),
            "--tokenizer",
            str(self.args.vocab),
            "--objective",
            "bert",
            "--seq-length",
            str(self.args.seq_length),
            "--workers",
            str(self.pk_workers()),
            "--out",
            str(out),
        )

    def pk_workers(self) -> int:
        return self.args.pk_workers if self.args.pk_workers is not None else self.args.workers

    def make_corpus(self, mb: float) -> Path:
        source = self.args.corpus.read_bytes()
        if not source.endswith(b"\n\n"):  # a blank line ends the last document of each copy
            source += b"\n" if source.endswith(b"\n") else b"\n\n"
        target = int(mb * 1e6)
        path = self.fresh(self.work / f"corpus-{mb:g}mb.txt")
        written = copies = 0
        with path.open("wb") as f:
            while written + len(source) <= target:
                f.write(source)
                written += len(source)
                copies += 1
            # The rest: the documents of one more copy that fit, cut at a blank line.
            cut = source.rfind(b"\n\n", 0, target - written)
            if cut > 0 or copies == 0:
                part = source[: cut + 2] if cut > 0 else source
                f.write(part)
                written += len(part)
        log(f"wrote {path} ({written / 1e6:.1f} MB, {copies} whole copies and a part)")
        return path

    def part_preprocess(self) -> dict[str, Any]:
        corpus = self.corpus
        if self.args.make_corpus_mb:
            corpus = self.make_corpus(self.args.make_corpus_mb)
        corpus_bytes = corpus.stat().st_size
        tp = self.tp()
        folder = self.new_dir(self.work / "preprocess")
        runs: list[dict[str, Any]] = []
        last: dict[str, Path] = {}
        for r in range(1, self.args.rounds + 1):
            for system in ("tp", "pk"):
                if system == "tp":
                    out = self.fresh(folder / f"r{r}-tp-dataset.pt")
                    p = self.run(
                        f"preprocess-r{r}-tp",
                        self.tp_preprocess_cmd(corpus, out),
                        tp,
                        kind="preprocess: TencentPretrain",
                    )
                    size = out.stat().st_size if out.is_file() else None
                else:
                    out = self.fresh(folder / f"r{r}-pk-shards")
                    p = self.run(
                        f"preprocess-r{r}-pk",
                        self.pk_preprocess_cmd(corpus, out),
                        self.work,
                        kind="preprocess: pretrainkit",
                    )
                    size = (
                        sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
                        if out.is_dir()
                        else None
                    )
                ok = p.rc == 0 and size is not None
                runs.append(
                    {
                        "round": r,
                        "system": system,
                        "wall_s": p.wall_s if ok else None,
                        "output_bytes": size,
                        "output_over_corpus": size / corpus_bytes if size else None,
                        "load_1m": p.load_start,
                        "error": None if ok else tail(p.text()),
                    }
                )
                log(f"  preprocess r{r} {system}: {fmt(p.wall_s, 2)} s, load {p.load_start}")
                if ok:
                    if system in last:
                        self.remove(last[system])
                    last[system] = out
                else:
                    self.remove(out)
        if corpus == self.corpus and len(last) == 2:
            self.data = {"tp": last["tp"], "pk": last["pk"]}
        rows = []
        for system, label in (("tp", "TencentPretrain"), ("pk", "pretrainkit")):
            mine = [x for x in runs if x["system"] == system]
            times = [x["wall_s"] for x in mine if x["wall_s"] is not None]
            sizes = [x["output_over_corpus"] for x in mine if x["output_over_corpus"]]
            rows.append(
                {
                    "system": label,
                    "median_s": median(times),
                    "mb_per_s": corpus_bytes / 1e6 / median(times) if times else None,
                    "output_over_corpus": sizes[-1] if sizes else None,
                    "output_mb": (sizes[-1] * corpus_bytes / 1e6) if sizes else None,
                    "runs_s": [round(t, 3) for t in times],
                    "load_1m": [x["load_1m"] for x in mine],
                    "errors": [x["error"] for x in mine if x["error"]],
                }
            )
        return {
            "corpus": str(corpus),
            "corpus_mb": corpus_bytes / 1e6,
            "workers": self.args.workers,
            "pk_workers": self.pk_workers(),
            "tp_dup_factor": self.tp_dup_factor(),
            "rows": rows,
            "speedup_tp_time_over_pk_time": ratio(rows[0]["median_s"], rows[1]["median_s"]),
            "runs": runs,
        }

    def ensure_data(self) -> dict[str, Path]:
        """Pre-training data of --corpus for both systems (one untimed build when needed)."""
        if self.data is None:
            folder = self.new_dir(self.work / "pretrain-data")
            tp_out, pk_out = folder / "tp-dataset.pt", folder / "pk-shards"
            self.created.update({tp_out, pk_out})
            p = self.run("data-tp", self.tp_preprocess_cmd(self.corpus, tp_out), self.tp())
            if p.rc != 0:
                raise SystemExit(f"TencentPretrain preprocess failed: {tail(p.text())}")
            p = self.run("data-pk", self.pk_preprocess_cmd(self.corpus, pk_out), self.work)
            if p.rc != 0:
                raise SystemExit(f"pretrainkit preprocess failed: {tail(p.text())}")
            self.data = {"tp": tp_out, "pk": pk_out}
        return self.data

    # -- model shapes -------------------------------------------------------------------------

    def shape_setup(self, preset: str) -> dict[str, Any]:
        """Check pretrainkit's preset and TencentPretrain's config against the shape; record
        the pretrainkit overrides and the TencentPretrain config path to use."""
        import pretrainkit  # the project itself; only to read the preset's sizes

        cfg = pretrainkit.load_model_config(preset)
        have = (
            cfg.encoder.num_layers,
            cfg.hidden_size,
            cfg.encoder.num_heads,
            cfg.encoder.ffn_size,
        )
        layers, hidden, heads, ffn = SHAPES.get(preset, have)
        overrides: list[str] = []
        wanted = {
            "encoder.num_layers": (cfg.encoder.num_layers, layers),
            "hidden_size": (cfg.hidden_size, hidden),
            "encoder.num_heads": (cfg.encoder.num_heads, heads),
            "encoder.ffn_size": (cfg.encoder.ffn_size, ffn),
            "embedding.max_positions": (cfg.embedding.max_positions, MAX_POSITIONS),
        }
        for key, (value, want) in wanted.items():
            if value != want:
                overrides += [f"--model.{key}", str(want)]
        if overrides:
            self.notes.append(f"{preset}: pretrainkit preset differs, overridden: {overrides}")
        self.pk_overrides[preset] = overrides

        tp = self.tp()
        size = preset.split("-", 1)[1] if "-" in preset else preset
        stock = tp / "models" / "bert" / f"{size}_config.json"
        want_tp = {
            "layers_num": layers,
            "hidden_size": hidden,
            "emb_size": hidden,
            "heads_num": heads,
            "feedforward_size": ffn,
            "max_seq_length": MAX_POSITIONS,
        }
        conf: dict[str, Any] | None = None
        if stock.is_file():
            conf = json.loads(stock.read_text(encoding="utf-8"))
            if all(conf.get(k) == v for k, v in want_tp.items()):
                self.tp_configs[preset] = stock
                return {"pk_overrides": overrides, "tp_config": str(stock), "tp_config_stock": True}
        template = tp / "models" / "bert" / "base_config.json"
        base = conf or (
            json.loads(template.read_text(encoding="utf-8"))
            if template.is_file()
            else {
                "hidden_act": "gelu",
                "dropout": 0.1,
                "data_processor": "bert",
                "embedding": ["word", "pos", "seg"],
                "encoder": "transformer",
                "mask": "fully_visible",
                "target": ["mlm", "sp"],
                "tie_weights": True,
            }
        )
        base.update(want_tp)
        path = self.fresh(self.work / "tp-configs" / f"{size}_config.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(base, indent=2), encoding="utf-8")
        self.notes.append(
            f"{preset}: TencentPretrain {stock.name} missing or different; wrote {path}"
        )
        self.tp_configs[preset] = path
        return {"pk_overrides": overrides, "tp_config": str(path), "tp_config_stock": False}

    # -- pretrain -----------------------------------------------------------------------------

    def tp_pretrain_cmd(self, preset: str, out: Path, steps: int, report: int) -> list[str]:
        data = self.ensure_data()
        return [
            PY,
            "pretrain.py",
            "--dataset_path",
            str(data["tp"]),
            "--vocab_path",
            str(self.args.vocab),
            "--config_path",
            str(self.tp_configs[preset]),
            "--output_model_path",
            str(out / "model.bin"),
            "--total_steps",
            str(steps),
            "--report_steps",
            str(report),
            "--save_checkpoint_steps",
            str(steps),
            "--batch_size",
            str(self.args.batch_size),
        ]

    def pk_pretrain_cmd(
        self, preset: str, out: Path, steps: int, report: int, precision: str
    ) -> list[str]:
        data = self.ensure_data()
        return self.pk(
            "pretrain",
            "--model",
            preset,
            *self.pk_overrides[preset],
            "--data",
            str(data["pk"]),
            "--out",
            str(out),
            "--steps",
            str(steps),
            "--batch-size",
            str(self.args.batch_size),
            *precision_flags(precision),
            "--log-every",
            str(report),
            "--no-progress",
            "--threads",
            str(self.args.threads),
        )

    def tp_precision_probe(self) -> dict[str, Any]:
        """Does TencentPretrain's pretrain.py take a bf16 / fp16 switch? Its help, then the
        error of passing --bf16."""
        tp = self.tp()
        helptext = "\n".join(self.run("tp-help", [PY, "pretrain.py", "--help"], tp).text())
        words = {"bf16", "fp16", "half", "amp", "precision", "mixed", "autocast"}
        switches = sorted(
            {o for o in re.findall(r"--[\w-]+", helptext) if words & set(re.split(r"[_-]", o[2:]))}
        )
        probe = self.run(
            "tp-bf16-probe",
            [PY, "pretrain.py", "--output_model_path", str(self.work / "unused.bin"), "--bf16"],
            tp,
            expect_failure=True,
        )
        error = next((t for t in reversed(probe.text("err")) if "error" in t), tail(probe.text()))
        result = {
            "switches_in_help": switches,
            "bf16_probe_rc": probe.rc,
            "bf16_probe_error": error if probe.rc != 0 else None,
        }
        ds_config = tp / "models" / "deepspeed_config.json"
        if probe.rc != 0:
            self.notes.append(
                "TencentPretrain bf16 on CPU: pretrain.py has no precision switch "
                f"(help lists {switches or 'none'}); `pretrain.py --bf16` -> rc {probe.rc}: "
                f"{error}. Its only mixed-precision path is --deepspeed with a DeepSpeed config "
                f"({ds_config.name} {'present' if ds_config.is_file() else 'not in this copy'}),"
                " not attempted here; TencentPretrain is measured in fp32 only."
            )
        return result

    def tp_rate(self, p: Proc, steps: int, skip: int, report: int) -> dict[str, Any]:
        reports = []
        for t, _, text in p.lines:
            m = TP_REPORT.search(text)
            if m:
                reports.append((int(m.group(1)), float(m.group(3)), t))
        tokens_per_window = self.args.batch_size * self.args.seq_length * report
        windows = [tokens_per_window / tok for step, tok, _ in reports if step > skip and tok > 0]
        have = {step for step, _, _ in reports}
        need = set(range(skip + report, steps + 1, report))
        if not need <= have or len(windows) != len(need):
            return {"error": f"report lines missing: have steps {sorted(have)}"}
        rate = (steps - skip) / sum(windows)
        step1, tok1, first = reports[0]
        # Its first window runs from Trainer() (just before the loop) to the first report.
        return {
            "steps_per_s": rate,
            "first_report_s": first,
            "first_report_step": step1,
            "loop_start_s": first - self.args.batch_size * self.args.seq_length * step1 / tok1,
        }

    def pk_rate(self, p: Proc, run_dir: Path, steps: int, skip: int, report: int) -> dict[str, Any]:
        path = run_dir / "metrics.jsonl"
        if not path.is_file():
            return {"error": f"no {path}"}
        records = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if "elapsed" in rec:
                    records[rec["step"]] = rec
        if skip not in records or steps not in records:
            return {"error": f"metrics records missing: have steps {sorted(records)}"}
        seconds = records[steps]["elapsed"] - records[skip]["elapsed"]
        rate = (steps - skip) / seconds
        first = p.first_file_s
        step1 = min(records)
        return {
            "steps_per_s": rate,
            "first_report_s": first,
            "first_report_step": step1,
            # ``elapsed`` counts from the start of its training loop.
            "loop_start_s": first - records[step1]["elapsed"] if first is not None else None,
        }

    def part_pretrain(self) -> dict[str, Any]:
        a = self.args
        steps, skip, report = a.steps, a.skip_steps, a.report_every
        result: dict[str, Any] = {
            "batch": a.batch_size,
            "seq": a.seq_length,
            "steps": steps,
            "skip_steps": skip,
            "report_every": report,
            "tp_precision": self.tp_precision_probe(),
            "presets": {},
        }
        self.ensure_data()
        systems = [("tp", "fp32")] + [("pk", prec) for prec in a.pk_precisions]
        for preset in a.presets:
            setup = self.shape_setup(preset)
            folder = self.new_dir(self.work / "pretrain" / preset)
            runs: list[dict[str, Any]] = []
            outs: dict[str, list[Path]] = {}
            for r in range(1, a.rounds + 1):
                for system, prec in systems:
                    key = f"{system}_{prec}"
                    out = self.fresh(folder / f"r{r}-{key}")
                    if system == "tp":
                        out.mkdir(parents=True)
                        p = self.run(
                            f"pretrain-{preset}-r{r}-{key}",
                            self.tp_pretrain_cmd(preset, out, steps, report),
                            self.tp(),
                            kind=f"pretrain {preset}: TencentPretrain fp32",
                        )
                        rate = self.tp_rate(p, steps, skip, report)
                        model = out / f"model.bin-{steps}"
                    else:
                        p = self.run(
                            f"pretrain-{preset}-r{r}-{key}",
                            self.pk_pretrain_cmd(preset, out, steps, report, prec),
                            self.work,
                            watch=out / "metrics.jsonl",
                            kind=f"pretrain {preset}: pretrainkit {prec}",
                        )
                        rate = self.pk_rate(p, out, steps, skip, report)
                        model = out / "model"
                    runs.append(run_record(r, key, p, rate))
                    log(
                        f"  pretrain {preset} r{r} {key}: "
                        f"{fmt(rate.get('steps_per_s'))} steps/s, first report "
                        f"{fmt(rate.get('first_report_s'), 2)} s, load {p.load_start}"
                        + (f"  ERROR {rate['error']}" if "error" in rate else "")
                    )
                    if "error" not in rate and model.exists():
                        outs.setdefault(key, []).append(out)
                        if system == "tp":
                            self.models.setdefault(preset, {})["tp"] = model
                        elif prec == "fp32" or "pk" not in self.models.get(preset, {}):
                            self.models.setdefault(preset, {})["pk"] = model
            keep = {m.parent for m in self.models.get(preset, {}).values()}
            for dirs in outs.values():
                for d in dirs[:-1]:
                    if d not in keep:
                        self.remove(d)
            result["presets"][preset] = {
                "setup": setup,
                "rows": self.summarise(runs, [f"{s}_{p}" for s, p in systems]),
                "runs": runs,
            }
        return result

    def summarise(self, runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for key in keys:
            mine = [x for x in runs if x["system"] == key]
            ok = [x for x in mine if "steps_per_s" in x]
            rates = [x["steps_per_s"] for x in ok]
            firsts = [x["first_report_s"] for x in ok if x.get("first_report_s") is not None]
            starts = [x["loop_start_s"] for x in ok if x.get("loop_start_s") is not None]
            rows[key] = {
                "steps_per_s": median(rates),
                "tokens_per_s": (
                    median(rates) * self.args.batch_size * self.args.seq_length if rates else None
                ),
                "rounds": [round(v, 4) for v in rates],
                "first_report_s": median(firsts),
                "loop_start_s": median(starts),
                "load_1m": [x["load_1m"] for x in mine],
                "errors": [x["error"] for x in mine if "error" in x],
            }
        base = rows.get("tp_fp32", {}).get("steps_per_s")
        for key in keys:
            if key != "tp_fp32":
                rows[key]["over_tp_fp32"] = ratio(rows[key]["steps_per_s"], base)
                tp_first = rows.get("tp_fp32", {}).get("first_report_s")
                rows[key]["first_report_tp_over_pk"] = ratio(tp_first, rows[key]["first_report_s"])
        return rows

    # -- finetune -----------------------------------------------------------------------------

    def bootstrap_models(self, preset: str) -> dict[str, Path]:
        """A 1-step pre-training of each system for fine-tuning when the pretrain part left none."""
        have = self.models.setdefault(preset, {})
        if preset not in self.tp_configs:
            self.shape_setup(preset)
        folder = self.work / "finetune-base" / preset
        if "tp" not in have:
            out = self.fresh(folder / "tp")
            out.mkdir(parents=True)
            p = self.run("bootstrap-tp", self.tp_pretrain_cmd(preset, out, 1, 1), self.tp())
            if p.rc == 0 and (out / "model.bin-1").is_file():
                have["tp"] = out / "model.bin-1"
            else:
                self.notes.append(
                    f"{preset}: TencentPretrain 1-step pretrain failed: {tail(p.text())}"
                )
        if "pk" not in have:
            out = self.fresh(folder / "pk")
            p = self.run("bootstrap-pk", self.pk_pretrain_cmd(preset, out, 1, 1, "fp32"), self.work)
            if p.rc == 0 and (out / "model").is_dir():
                have["pk"] = out / "model"
            else:
                self.notes.append(f"{preset}: pretrainkit 1-step pretrain failed: {tail(p.text())}")
        return have

    def head(self, src: Path, rows: int, name: str, folder: Path) -> Path:
        lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(lines) - 1 < rows:
            raise SystemExit(f"{src} has {len(lines) - 1} rows, {rows} needed")
        path = self.fresh(folder / name)
        path.write_text("".join(lines[: rows + 1]), encoding="utf-8")
        return path

    def tp_ft_rate(self, p: Proc, steps: int, skip: int, report: int) -> dict[str, Any]:
        stamps: dict[int, float] = {}
        first, begun = None, None
        for t, _, text in p.lines:
            m = TP_FT_REPORT.match(text)
            if m and int(m.group(2)) == 1:
                stamps[int(m.group(3))] = stamp(m.group(1))
                first = t if first is None else first
            m = TP_FT_START.match(text)
            if m and begun is None:
                begun = stamp(m.group(1))
        if skip not in stamps or steps not in stamps:
            return {"error": f"report lines missing: have steps {sorted(stamps)}"}
        rate = (steps - skip) / (stamps[steps] - stamps[skip])
        step1 = min(stamps)
        loop_start = None
        if first is not None and begun is not None:
            # "Start training." is logged just before its epoch loop.
            loop_start = first - (stamps[step1] - begun)
        return {
            "steps_per_s": rate,
            "first_report_s": first,
            "first_report_step": step1,
            "loop_start_s": loop_start,
        }

    def part_finetune(self) -> dict[str, Any]:
        a = self.args
        steps, skip, report = a.steps, a.skip_steps, a.report_every
        folder = self.new_dir(self.work / "finetune")
        train = self.head(a.train, steps * a.batch_size, "train.tsv", folder)
        dev = self.head(a.dev, 64, "dev.tsv", folder)
        result: dict[str, Any] = {
            "train": str(train),
            "train_rows": steps * a.batch_size,
            "batch": a.batch_size,
            "seq": a.seq_length,
            "steps": steps,
            "skip_steps": skip,
            "report_every": report,
            "presets": {},
        }
        systems = [("tp", "fp32")] + [("pk", prec) for prec in a.pk_precisions]
        for preset in a.presets:
            models = self.bootstrap_models(preset)
            if "tp" not in models or "pk" not in models:
                result["presets"][preset] = {"skipped": "no pre-trained model (see notes)"}
                continue
            runs: list[dict[str, Any]] = []
            sub = self.new_dir(folder / preset)
            made: list[Path] = []
            for r in range(1, a.rounds + 1):
                for system, prec in systems:
                    key = f"{system}_{prec}"
                    out = self.fresh(sub / f"r{r}-{key}")
                    made.append(out)
                    if system == "tp":
                        out.mkdir(parents=True)
                        cmd = [
                            PY,
                            "finetune/run_classifier.py",
                            "--pretrained_model_path",
                            str(models["tp"]),
                            "--vocab_path",
                            str(a.vocab),
                            "--config_path",
                            str(self.tp_configs[preset]),
                            "--train_path",
                            str(train),
                            "--dev_path",
                            str(dev),
                            "--output_model_path",
                            str(out / "finetuned.bin"),
                            "--epochs_num",
                            "1",
                            "--batch_size",
                            str(a.batch_size),
                            "--seq_length",
                            str(a.seq_length),
                            "--report_steps",
                            str(report),
                        ]
                        p = self.run(
                            f"finetune-{preset}-r{r}-{key}",
                            cmd,
                            self.tp(),
                            kind=f"finetune {preset}: TencentPretrain fp32",
                        )
                        rate = self.tp_ft_rate(p, steps, skip, report)
                    else:
                        cmd = self.pk(
                            "finetune",
                            "--model",
                            str(models["pk"]),
                            "--train",
                            str(train),
                            "--out",
                            str(out),
                            "--steps",
                            str(steps),
                            "--batch-size",
                            str(a.batch_size),
                            "--seq-length",
                            str(a.seq_length),
                            "--pooling",
                            "first",
                            *precision_flags(prec),
                            "--log-every",
                            str(report),
                            "--no-progress",
                            "--threads",
                            str(a.threads),
                        )
                        p = self.run(
                            f"finetune-{preset}-r{r}-{key}",
                            cmd,
                            self.work,
                            watch=out / "metrics.jsonl",
                            kind=f"finetune {preset}: pretrainkit {prec}",
                        )
                        rate = self.pk_rate(p, out, steps, skip, report)
                    runs.append(run_record(r, key, p, rate))
                    log(
                        f"  finetune {preset} r{r} {key}: "
                        f"{fmt(rate.get('steps_per_s'))} steps/s, first report "
                        f"{fmt(rate.get('first_report_s'), 2)} s, load {p.load_start}"
                        + (f"  ERROR {rate['error']}" if "error" in rate else "")
                    )
            for d in made:  # fine-tuned weights are not needed; the logs are kept
                self.remove(d)
            result["presets"][preset] = {
                "tp_model": str(models["tp"]),
                "pk_model": str(models["pk"]),
                "rows": self.summarise(runs, [f"{s}_{p}" for s, p in systems]),
                "runs": runs,
            }
        return result


# -- report -------------------------------------------------------------------------------------


def precision_flags(variant: str) -> list[str]:
    """``fp32`` / ``bf16``, optionally with ``-pack`` (e.g. ``bf16-pack``): the pretrainkit
    flags of that variant (``--pack`` packs each batch's instances into fewer rows)."""
    precision, _, extra = variant.partition("-")
    if extra not in ("", "pack"):
        raise SystemExit(f"--pk-precisions: {variant!r} is not fp32 / bf16 [+ '-pack']")
    return ["--precision", precision] + (["--pack"] if extra else [])


def loads_text(values: list[float]) -> str:
    return "–".join(f"{v:.2f}" for v in (min(values), max(values))) if values else "n/a"


LABELS = {"tp_fp32": "TencentPretrain fp32"}


def label(key: str) -> str:
    return LABELS.get(key, key.replace("pk_", "pretrainkit "))


def markdown(summary: dict[str, Any]) -> str:
    out: list[str] = []
    if "help" in summary:
        out += [
            f"### CLI start-up (median of {summary['help']['runs']} runs)",
            "",
            "| command | median s | min s | load 1m |",
            "|---|---:|---:|---|",
        ]
        for row in summary["help"]["rows"]:
            err = f" (failed: {row['error']})" if row["error"] else ""
            out.append(
                f"| `{row['command']}`{err} | {fmt(row['median_s'])} | {fmt(row['min_s'])} "
                f"| {loads_text(row['load_1m'])} |"
            )
        out.append("")
    if "preprocess" in summary:
        pre = summary["preprocess"]
        out += [
            f"### Preprocess (bert, seq 128, TencentPretrain {pre['workers']} processes, "
            f"pretrainkit {pre.get('pk_workers', pre['workers'])} workers, "
            f"{pre['corpus_mb']:.1f} MB corpus, median of rounds)",
            "",
            "| system | median s | MB/s | output MB | output / corpus | load 1m |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for row in pre["rows"]:
            out.append(
                f"| {row['system']} | {fmt(row['median_s'], 2)} | {fmt(row['mb_per_s'], 2)} "
                f"| {fmt(row['output_mb'], 1)} | {fmt(row['output_over_corpus'], 3)} "
                f"| {loads_text(row['load_1m'])} |"
            )
        out += [
            "",
            f"TencentPretrain time / pretrainkit time: "
            f"{fmt(pre['speedup_tp_time_over_pk_time'], 2)}x; TencentPretrain dup_factor "
            f"{pre['tp_dup_factor']} (masked copies of each instance).",
            "",
        ]
    for part, title in (("pretrain", "Pre-training (BERT MLM + NSP)"), ("finetune", "Fine-tuning")):
        if part not in summary:
            continue
        res = summary[part]
        out += [
            f"### {title}: batch {res['batch']} x seq {res['seq']}, steps/s between step "
            f"{res['skip_steps']} and {res['steps']} (median of rounds)",
            "",
            "| model | system | steps/s | x TP fp32 | tokens/s (b x s) | first report s | "
            "to loop start s | rounds | load 1m |",
            "|---|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for preset, res_p in res["presets"].items():
            if "skipped" in res_p:
                out.append(f"| {preset} | skipped: {res_p['skipped']} | | | | | | | |")
                continue
            for key, row in res_p["rows"].items():
                err = f" (failed: {'; '.join(row['errors'])})" if row["errors"] else ""
                out.append(
                    f"| {preset} | {label(key)}{err} | {fmt(row['steps_per_s'])} "
                    f"| {fmt(row.get('over_tp_fp32'), 2)} | {fmt(row['tokens_per_s'], 0)} "
                    f"| {fmt(row['first_report_s'], 2)} | {fmt(row['loop_start_s'], 2)} "
                    f"| {', '.join(f'{v:.3f}' for v in row['rounds'])} "
                    f"| {loads_text(row['load_1m'])} |"
                )
        out += [
            "",
            f"first report = process start until the report of step {res['report_every']} is "
            "visible; to loop start = first report - first window (own clock).",
            "",
        ]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    data = Path(os.environ.get("PRETRAINKIT_DATA", SHARED / "data"))
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a fresh temp)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON summary here")
    p.add_argument("--tp", type=Path, default=SHARED / "anchors" / "tencentpretrain")
    p.add_argument(
        "--corpus", type=Path, default=data / "corpora" / "CLUECorpusSmall_bert_sampled.txt"
    )
    p.add_argument("--make-corpus-mb", type=float, default=None, metavar="N")
    p.add_argument("--vocab", type=Path, default=data / "vocab" / "google_zh_vocab.txt")
    p.add_argument("--train", type=Path, default=data / "chnsenticorp" / "train.tsv")
    p.add_argument("--dev", type=Path, default=data / "chnsenticorp" / "dev.tsv")
    p.add_argument("--presets", nargs="+", default=["bert-tiny", "bert-small", "bert-base"])
    p.add_argument(
        "--pk-precisions",
        nargs="+",
        default=["fp32", "bf16"],
        help="pretrainkit variants: fp32, bf16, fp32-pack, bf16-pack (-pack: --pack)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--help-runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--report-every", type=int, default=10)
    p.add_argument("--skip-steps", type=int, default=None, help="default: --report-every")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="preprocess processes, both systems")
    p.add_argument(
        "--pk-workers",
        type=int,
        default=None,
        help="pretrainkit's --workers if not --workers (on 2 cores one process is faster: "
        "the tokenizer library already uses both cores)",
    )
    p.add_argument("--tp-dup-factor", type=int, default=None)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    p.add_argument("--keep-all", action="store_true", help="delete nothing, not even own files")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in args.parts if x not in PARTS]
    if bad:
        p.error(f"--only: unknown part(s) {bad}; choose from {PARTS}")
    if args.skip_steps is None:
        args.skip_steps = args.report_every
    if args.skip_steps % args.report_every or args.steps % args.report_every:
        p.error("--steps and --skip-steps must be multiples of --report-every")
    if not 0 < args.skip_steps < args.steps:
        p.error("need 0 < --skip-steps < --steps (the rate is taken between them)")
    for path in (args.corpus, args.vocab):
        if not path.is_file():
            p.error(f"missing {path}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="vs-tencentpretrain-"))
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    for name in ("corpus", "vocab", "train", "dev", "tp"):
        setattr(args, name, getattr(args, name).resolve())
    bench = Bench(args)
    log(f"work folder: {args.work}")

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    summary: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": version("torch"),
            "pretrainkit": version("pretrainkit"),
        },
        "settings": {
            "threads": args.threads,
            "env": {"OMP_NUM_THREADS": args.threads, "MKL_NUM_THREADS": args.threads},
            "rounds": args.rounds,
            "parts": args.parts,
            "work": str(args.work),
            "tencentpretrain": str(args.tp),
        },
        "load_1m_start": load1(),
    }
    started = time.perf_counter()
    for part in PARTS:
        if part in args.parts:
            log(f"== {part}")
            summary[part] = getattr(bench, f"part_{part}")()
    summary["load_1m_end"] = load1()
    summary["total_s"] = time.perf_counter() - started
    summary["commands"] = bench.commands
    summary["notes"] = bench.notes
    summary["logs"] = str(bench.logs)

    print(markdown(summary))
    print("### Commands (first run of each; later rounds differ only in output paths)\n")
    for kind, cmd in bench.commands.items():
        print(f"- {kind}: `{cmd}`")
    if bench.notes:
        print("\n### Notes\n")
        for note in bench.notes:
            print(f"- {note}")
    text = json.dumps(summary, indent=2, default=str)
    print("\n### JSON\n")
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
