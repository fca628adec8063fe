"""The commands. Each one parses into typed values and calls the Python API."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from pretrainkit.cli.options import (
    add_dataclass_options,
    dataclass_from_args,
    split_model_overrides,
)
from pretrainkit.errors import ConfigError, DataError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, summary: str):
    """Register a command: ``add_arguments(parser)`` fills its parser, the function runs it."""

    def decorator(add_arguments):
        def register(run):
            COMMANDS[name] = (summary, add_arguments, run)
            return run

        return register

    return decorator


# TrainConfig fields the CLI does not expose as flags (tuples, or set by the command itself).
TRAIN_SKIP = ("betas",)


def add_overwrite(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    """The one flag that lets a command replace an output it did not create (DESIGN.md §7)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} when it exists (otherwise an existing {what} is an error and is "
        "left untouched)",
    )


def add_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--columns",
        type=_column_list,
        default=None,
        help="the column names of a file WITHOUT a header line, comma-separated, e.g. "
        "label,text_a or label,text_a,text_b (SST-2 as distributed has no header)",
    )


def _column_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


def _train_options(parser: argparse.ArgumentParser) -> None:
    from pretrainkit.distributed import ParallelConfig
    from pretrainkit.training import TrainConfig

    parser.add_argument("--config", help="YAML file of option values (defaults < file < flags)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per micro-batch and process (default 32, or from --global-batch-size)",
    )
    parser.add_argument(
        "--global-batch-size",
        type=int,
        default=None,
        help="sequences per optimizer step over all processes; sets --batch-size to "
        "N / (processes × accumulate), which must divide exactly",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --out"
    )
    add_overwrite(parser, "the run folder --out")
    add_dataclass_options(parser, TrainConfig, skip=TRAIN_SKIP, title="training")
    add_dataclass_options(parser, ParallelConfig, title="distributed (launch with torchrun)")


def _train_config(args: argparse.Namespace, extra: dict | None = None):
    from pretrainkit.training import TrainConfig

    return dataclass_from_args(TrainConfig, args, extra)


def _parallel_config(args: argparse.Namespace):
    from pretrainkit.distributed import ParallelConfig

    return dataclass_from_args(ParallelConfig, args)


def _add_presets(p):
    pass


@command("presets", "list the shipped model presets")(_add_presets)
def presets(args):
    from pretrainkit.config.presets import list_presets, preset_summary

    names = list_presets()
    width = max(map(len, names))
    for name in names:
        print(f"{name:{width}s}  {preset_summary(name)}")


def _add_vocab(p):
    p.add_argument("--corpus", nargs="+", required=True, help="text or .jsonl files")
    p.add_argument("--kind", required=True, choices=["wordpiece", "bpe", "unigram"])
    p.add_argument("--size", type=int, required=True, help="vocabulary size")
    p.add_argument("--out", required=True, help="output tokenizer folder")
    p.add_argument("--cased", action="store_true", help="keep case (default lowercases)")
    add_overwrite(p)


@command("vocab", "train a WordPiece / byte-level BPE / unigram vocabulary on a corpus")(_add_vocab)
def vocab(args):
    from pretrainkit.tokenization import train_tokenizer

    tok = train_tokenizer(
        args.corpus,
        args.kind,
        args.size,
        args.out,
        lowercase=not args.cased,
        overwrite=args.overwrite,
    )
    return {"out": args.out, "kind": tok.kind, "vocab_size": tok.vocab_size}


def _objective_names() -> list[str]:
    from pretrainkit.data.objectives import OBJECTIVES

    return OBJECTIVES.names()


OBJECTIVE_PREFIX = "objective__"


def _add_objective_options(parser: argparse.ArgumentParser) -> None:
    from pretrainkit.cli.options import add_union_options
    from pretrainkit.data.objectives import OBJECTIVES

    classes = {name: OBJECTIVES.get(name).options_class for name in OBJECTIVES.names()}
    title = "objective options (recorded in the shards; pretrain may replace them)"
    add_union_options(
        parser, {k: v for k, v in classes.items() if v is not None}, OBJECTIVE_PREFIX, title
    )


def _objective_options(args: argparse.Namespace, objective: str | None) -> dict[str, Any]:
    """The objective options given; with ``objective``, checked against its options (pretrain
    checks them against the shards' objective)."""
    from pretrainkit.cli.options import given_union_options
    from pretrainkit.data.objectives import get_objective

    if objective is None:
        prefix = OBJECTIVE_PREFIX
        return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)}
    cls = get_objective(objective).options_class
    return given_union_options(args, OBJECTIVE_PREFIX, cls, f"objective {objective}")


def _add_preprocess(p):
    p.add_argument(
        "--corpus",
        nargs="+",
        required=True,
        help="text or .jsonl corpus files (masked_patch: image TSVs with an image column)",
    )
    p.add_argument(
        "--tokenizer",
        required=True,
        help="tokenizer folder, BERT vocab.txt, GPT-2 vocab file or SentencePiece .model "
        "(masked_patch tokenizes nothing: the shards record any tokenizer given)",
    )
    p.add_argument("--objective", required=True, choices=_objective_names())
    p.add_argument("--seq-length", type=int, required=True)
    p.add_argument("--out", required=True, help="output shard folder")
    p.add_argument(
        "--workers", type=int, default=1, help="processes that tokenize text or decode images"
    )
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip undecodable or invalid lines, or rows whose image cannot be read (counted) "
        "instead of failing",
    )
    add_overwrite(p)
    _add_objective_options(p)


@command("preprocess", "tokenize a corpus into token shards for pre-training")(_add_preprocess)
def preprocess(args):
    from pretrainkit.data import preprocess as run

    manifest = run(
        args.corpus,
        args.tokenizer,
        args.objective,
        args.seq_length,
        args.out,
        workers=args.workers,
        skip_bad_lines=args.skip_bad_lines,
        overwrite=args.overwrite,
        objective_options=_objective_options(args, args.objective),
    )
    return {k: v for k, v in manifest.items() if k not in ("corpus",)}


def _add_pretrain(p):
    p.add_argument(
        "--model",
        required=True,
        help="preset name or YAML file; --model.KEY VALUE overrides any model key",
    )
    p.add_argument("--data", required=True, help="shard folder written by preprocess")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--dev", help="held-out shard folder scored every --eval-every steps and at the end"
    )
    p.add_argument("--eval-batches", type=int, default=20, help="batches of --dev per evaluation")
    p.add_argument(
        "--pack",
        action="store_true",
        help="pack each training batch's instances into as few rows as they fit (block-diagonal "
        "attention, positions restarting per instance): the same instances and loss without "
        "the padding's work (objectives bert, albert, mlm; transformer encoders)",
    )
    # Only from a --config file: a mapping of dotted model keys, like --model.KEY VALUE flags.
    p.set_defaults(model_overrides=None)
    _train_options(p)
    _add_objective_options(p)


@command("pretrain", "pre-train a model on token shards")(_add_pretrain)
def pretrain(args, extra):
    from pretrainkit.workflows.pretrain import pretrain as run

    overrides = dict(args.model_overrides or {})
    overrides.update(split_model_overrides(extra))
    return run(
        args.model,
        args.data,
        args.out,
        _train_config(args),
        args.batch_size,
        overrides,
        resume=args.resume,
        strategy=_parallel_config(args),
        dev=args.dev,
        eval_batches=args.eval_batches,
        global_batch_size=args.global_batch_size,
        overwrite=args.overwrite,
        objective_options=_objective_options(args, None),
        pack=args.pack,
    )


pretrain.accepts_model_overrides = True  # type: ignore[attr-defined]


def _task_names() -> list[str]:
    from pretrainkit.tasks import TASKS

    return TASKS.names()


TASK_PREFIX = "task__"


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """One flag per field of any task's options; a flag the chosen task does not have is an
    error naming the tasks that do (never silently ignored)."""
    import typing

    from pretrainkit.cli.options import field_docs, option_type
    from pretrainkit.tasks import TASKS

    defaults: dict[str, dict[str, Any]] = {}  # option -> task -> its default
    hints: dict[str, Any] = {}
    # option -> its description -> the tasks that describe it so: tasks that share a name may
    # mean different things by it (pooling of a classifier head vs of sentence embeddings).
    docs: dict[str, dict[str, list[str]]] = {}
    for name in TASKS.names():
        cls = TASKS.get(name).options_class
        types, texts = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            defaults.setdefault(f.name, {})[name] = f.default
            hints.setdefault(f.name, types[f.name])
            docs.setdefault(f.name, {}).setdefault(texts.get(f.name, ""), []).append(name)
    group = parser.add_argument_group("task options (--task NAME; defaults per task)")
    for field, hint in hints.items():
        flag = "--" + field.replace("_", "-")
        described = docs[field]
        if len(described) == 1:
            doc = next(iter(described))
        else:
            doc = " | ".join(f"{', '.join(tasks)}: {text}" for text, tasks in described.items())
        # One default for every task that has the option, or each task's own.
        values = defaults[field]
        if len(set(map(repr, values.values()))) == 1:
            where = f"{', '.join(values)}; default: {next(iter(values.values()))}"
        else:
            where = "; ".join(f"{task}: {value}" for task, value in values.items())
        text = f"{doc} [{where}]".replace("%", "%%")
        if hint is bool:
            group.add_argument(
                flag,
                dest=TASK_PREFIX + field,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            group.add_argument(
                flag,
                dest=TASK_PREFIX + field,
                type=option_type(hint),
                default=argparse.SUPPRESS,
                metavar=field.upper(),
                help=text,
            )


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options given on the command line (or in --config), checked against the
    chosen task's options."""
    from pretrainkit.tasks import TASKS

    given = {k[len(TASK_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(TASK_PREFIX)}
    own = {f.name for f in dataclasses.fields(TASKS.get(args.task).options_class)}
    stray = sorted(set(given) - own)
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise ConfigError(
            f"{flags} does not apply to task {args.task!r} (its options: "
            f"{', '.join('--' + k.replace('_', '-') for k in sorted(own))})"
        )
    return given


FINETUNE_EPILOG = """defaults: without --steps, 3 epochs. The learning rate and warmup follow the
task and the model's width unless given: lr 3e-4 for hidden size <= 256, 1e-4 up to 512, 3e-5
above; warmup 10%% of the steps (classification, regression)."""


def _add_init(p):
    p.add_argument(
        "--model", required=True, help="preset name or YAML file; --model.KEY VALUE overrides"
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer folder, BERT vocab.txt, GPT-2 vocab file or SentencePiece .model; the "
        "model's vocab_size follows it (needed unless the model reads no token ids: ViT)",
    )
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    add_overwrite(p)


@command("init", "write a randomly initialised model folder (from-scratch baselines)")(_add_init)
def init(args, extra):
    import torch

    from pretrainkit.config import load_model_config
    from pretrainkit.model import build_model
    from pretrainkit.tokenization import load_tokenizer

    overrides = split_model_overrides(extra)
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = load_tokenizer(args.tokenizer)
        overrides["vocab_size"] = tokenizer.vocab_size
    config = load_model_config(args.model, overrides)
    embeddings = [config.embedding, *([config.tgt_embedding] if config.tgt_embedding else [])]
    if tokenizer is None and any("word" in e.parts for e in embeddings):
        raise ConfigError(
            f"init: {args.model} embeds token ids (a 'word' embedding part); give --tokenizer"
        )
    torch.manual_seed(args.seed)
    model = build_model(config)
    model.tokenizer = tokenizer
    out = model.save(args.out, overwrite=args.overwrite)
    return {"out": str(out), "parameters": sum(p.numel() for p in model.parameters())}


init.accepts_model_overrides = True  # type: ignore[attr-defined]


def _add_finetune(p):
    p.add_argument("--task", default="classification", choices=_task_names())
    p.add_argument("--model", required=True, help="pre-trained model folder (or a run folder)")
    p.add_argument(
        "--train",
        required=True,
        help="the task's file, e.g. a TSV with header label<TAB>text_a[<TAB>text_b] "
        "(classification, regression) or STS-B .csv (regression)",
    )
    p.add_argument("--dev", help="a file of the same format, evaluated during training")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=float, default=None, help="sets --steps from the data size")
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        help="K-fold cross-validation on --train (no --dev): one run per fold in OUT/fold-N, "
        "the metrics' mean and standard deviation in OUT/folds.json",
    )
    add_columns(p)
    _add_task_options(p)
    _add_perturb_options(p)
    from pretrainkit.cli.peft_commands import add_peft_options

    add_peft_options(p)
    _train_options(p)
    p.epilog = FINETUNE_EPILOG


def _add_perturb_options(p: argparse.ArgumentParser) -> None:
    from pretrainkit.perturb.options import PerturbOptions

    title = "perturbed training: FGM / PGD, Embedding-Push, Attention-Pull, Robust targets"
    add_dataclass_options(p, PerturbOptions, title=title)


def _perturb_options(args: argparse.Namespace) -> dict[str, Any]:
    """The perturbed-training options given (checked by ``PerturbOptions`` in ``finetune``)."""
    from pretrainkit.perturb.options import PerturbOptions

    names = {f.name for f in dataclasses.fields(PerturbOptions)}
    return {k: v for k, v in vars(args).items() if k in names}


@command("finetune", "fine-tune a model folder on a downstream task")(_add_finetune)
def finetune(args):
    from pretrainkit.cli.peft_commands import peft_choice
    from pretrainkit.training import TrainConfig
    from pretrainkit.workflows.finetune import finetune as run

    has_steps = "steps" in vars(args)
    if args.epochs is not None and has_steps:
        raise ConfigError("finetune: give --steps or --epochs, not both")
    epochs = args.epochs if args.epochs is not None or has_steps else 3.0
    names = TrainConfig.field_names()
    # Only the options the user set: the task fills in its defaults (lr, warmup) for the
    # model's width, and the options that depend on the steps are checked once they are known.
    train = {k: v for k, v in vars(args).items() if k in names}
    return run(
        args.task,
        args.model,
        args.train,
        args.dev,
        args.out,
        train,
        batch_size=args.batch_size,
        epochs=epochs,
        task_options=_task_options(args),
        strategy=_parallel_config(args),
        resume=args.resume,
        global_batch_size=args.global_batch_size,
        columns=args.columns,
        overwrite=args.overwrite,
        folds=args.folds,
        perturb=_perturb_options(args),
        peft=peft_choice(args)[0],
        peft_options=peft_choice(args)[1],
    )


SEQ_HELP = "tokens per input (default: the length the model was fine-tuned with)"


def _add_evaluate(p):
    p.add_argument("--model", required=True, help="fine-tuned model folder (records its task)")
    p.add_argument("--data", required=True, help="a labelled file in the task's format")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-length", type=int, help=SEQ_HELP)
    add_columns(p)


@command("evaluate", "score a fine-tuned model on a labelled file")(_add_evaluate)
def evaluate(args):
    from pretrainkit.workflows.finetune import evaluate as run

    return run(
        args.model, args.data, args.batch_size, columns=args.columns, seq_length=args.seq_length
    )


def _add_predict(p):
    p.add_argument("--model", required=True, help="fine-tuned model folder (records its task)")
    p.add_argument("--data", required=True, help="a file in the task's format; labels optional")
    p.add_argument(
        "--out", required=True, help="output file, e.g. label<TAB>probability (classification)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-length", type=int, help=SEQ_HELP)
    add_columns(p)
    add_overwrite(p)


@command("predict", "write predictions of a fine-tuned model for a file")(_add_predict)
def predict(args):
    from pretrainkit.workflows.finetune import predict as run

    out = run(
        args.model,
        args.data,
        args.out,
        args.batch_size,
        columns=args.columns,
        overwrite=args.overwrite,
        seq_length=args.seq_length,
    )
    return {"out": str(out)}


def _add_plot(p):
    p.add_argument("run", help="run folder with metrics.jsonl")


@command("plot", "write PNG curves (loss, lr, tokens/s, dev metrics) of a run")(_add_plot)
def plot(args):
    from pretrainkit.training.plot import plot_run

    return {"plots": [str(p) for p in plot_run(args.run)]}


def _add_demo(p):
    p.add_argument("--data", help="data folder (else $PRETRAINKIT_DATA, else ../shared/data)")
    p.add_argument("--out", default="runs/demo", help="run folder (replaced if it exists)")
    p.add_argument(
        "--vocab",
        help="use this vocab (BERT vocab.txt or tokenizer folder) instead of training one",
    )
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--finetune-epochs", type=float, default=None)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])


@command("demo", "English quickstart: vocab → shards → pre-train → fine-tune → SST-2 dev")(
    _add_demo
)
def demo(args):
    from pretrainkit.workflows.demo import run_demo

    return run_demo(
        args.data,
        args.out,
        vocab=args.vocab,
        pretrain_steps=args.pretrain_steps,
        finetune_epochs=args.finetune_epochs,
        precision=args.precision,
    )


def _add_convert(p):
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-hf", metavar="HF_DIR", help="HF model folder to import")
    direction.add_argument(
        "--to-hf",
        metavar="DIR",
        help="pretrainkit model folder to export; a LoRA PEFT folder (finetune --peft lora) "
        "writes its base in OUT/base and the adapter in the HF peft format in OUT",
    )
    direction.add_argument(
        "--from-checkpoint",
        metavar="CHECKPOINT",
        help="a sharded training checkpoint (RUN/checkpoints/step-N of a run with "
        "--checkpoint-format sharded) to consolidate into a plain pretrainkit model folder; "
        "verified against its manifest first",
    )
    p.add_argument("--out", required=True, help="output folder, written whole or not at all")
    p.add_argument(
        "--family",
        help="HF model_type, one of: "
        + ", ".join(CONVERT_FAMILIES)
        + "; default: config.json's, or inferred",
    )
    add_overwrite(p)


# The families registered in convert/, spelt out because their modules import torch and
# `convert --help` must answer at once; tests/test_cli_startup.py checks it is the registry.
CONVERT_FAMILIES = (
    "albert",
    "bart",
    "bert",
    "gpt2",
    "llama",
    "pegasus",
    "roberta",
    "speech_to_text",
    "t5",
    "vit",
    "xlm-roberta",
)


@command(
    "convert",
    "convert a model folder between HuggingFace and pretrainkit, or a sharded checkpoint into one",
)(_add_convert)
def convert(args):
    from pretrainkit.convert import convert_from_hf, convert_to_hf
    from pretrainkit.peft.options import is_peft_folder

    if args.from_checkpoint:
        from pretrainkit.convert.checkpoint import checkpoint_to_model

        if args.family:
            raise ConfigError("--family: a checkpoint's config.yaml gives its model; drop it")
        out = checkpoint_to_model(args.from_checkpoint, args.out, overwrite=args.overwrite)
    elif args.from_hf:
        out = convert_from_hf(args.from_hf, args.out, args.family, overwrite=args.overwrite)
    elif is_peft_folder(args.to_hf):  # LoRA: OUT/base (HF) + the adapter in peft's format
        from pretrainkit.peft.hf_export import export_hf

        if args.family:
            raise ConfigError("--family: a PEFT folder's base gives its family; drop it")
        out = export_hf(args.to_hf, args.out, overwrite=args.overwrite)
    else:
        out = convert_to_hf(args.to_hf, args.out, args.family, overwrite=args.overwrite)
    return {"out": str(out)}


def _add_embed(p):
    p.add_argument("--model", required=True, help="model folder with a tokenizer")
    p.add_argument(
        "--data",
        required=True,
        help="one text per line; a .tsv task file (header label/text_a/text_b) gives text_a",
    )
    p.add_argument(
        "--out", required=True, help="output .npy file, float32 [rows, hidden] ([rows, K] whitened)"
    )
    p.add_argument(
        "--pooling",
        choices=["cls", "mean", "max", "first-last-avg"],
        help="default: the one the folder's whitening was fitted for, else the model's recorded "
        "one (sentence-transformers), else mean",
    )
    p.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="unit-length embeddings (default: the model's recorded choice, else off)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--max-length", type=int, help="tokens per text incl. specials (default: the model's)"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="bf16: autocast, faster on CPUs with bf16 instructions; fp16: GPU only",
    )
    p.add_argument(
        "--whiten",
        type=int,
        metavar="K",
        help="fit a whitening (BERT-whitening) on the pooled vectors and keep K directions; "
        "replaces the folder's own",
    )
    p.add_argument(
        "--whiten-fit",
        metavar="FILE",
        help="texts to fit the whitening on (default: --data); more than hidden-size of them",
    )
    p.add_argument(
        "--whiten-out",
        metavar="DIR",
        help="write the model with the fitted whitening to this new folder (not --model)",
    )
    add_overwrite(p)


@command("embed", "write sentence embeddings of a text file as a .npy array")(_add_embed)
def embed(args):
    from pretrainkit.workflows.embed import embed as run

    return run(
        args.model,
        args.data,
        args.out,
        pooling=args.pooling,
        normalize=args.normalize,
        batch_size=args.batch_size,
        max_length=args.max_length,
        overwrite=args.overwrite,
        precision=args.precision,
        whiten=args.whiten,
        whiten_fit=args.whiten_fit,
        whiten_out=args.whiten_out,
    )


def _prompt_ids(tok: Any, text: str, seq2seq: bool) -> list[int]:
    """A prompt as the family's tokenizer wraps it: the whole template for an encoder's input
    (T5 ``a </s>``, BART ``<s> a </s>``); for a decoder-only model only what precedes the text
    (LLaMA's ``<s>``), since the model continues it, and bos for an empty line."""
    ids = tok.encode(text)
    if seq2seq:
        return list(tok.build_inputs(ids)[0])
    before = []
    for item, _ in tok.template.single:
        if item == "$A":
            break
        before.append(tok.template_token_id(item))
    return [*before, *ids] or [tok.bos_id]


def _add_generate(p):
    p.add_argument(
        "--model",
        required=True,
        help="decoder-only or encoder-decoder model folder with a tokenizer",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt")
    source.add_argument("--data", help="text file, one prompt per line")
    p.add_argument("--out", help="write the outputs here (one per line) instead of printing")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--strategy", default="greedy", choices=["greedy", "beam", "sample"])
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--top-k", type=int, default=0, help="sample among the k best (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, help="seed of the sampling generator")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per batch")
    p.add_argument("--no-cache", action="store_true", help="recompute every step (slower)")
    add_overwrite(p)


@command(
    "generate", "continue prompts (decoder-only) or answer them (encoder-decoder, e.g. T5, BART)"
)(_add_generate)
def generate(args):
    from pretrainkit.fileio import check_output, read_utf8, write_text_file
    from pretrainkit.folders import load
    from pretrainkit.generation import check_generative
    from pretrainkit.generation import generate as run

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out:  # before the model is loaded and anything generated
        check_output(args.out, args.overwrite, folder=False)
    model = load(args.model)
    check_generative(model)
    seq2seq = model.decoder is not None
    tok = model.tokenizer
    if tok is None:
        raise ConfigError(f"{args.model}: no tokenizer folder; generate needs one to read text")
    if args.prompt is not None:
        prompts = [args.prompt]
    else:
        prompts = read_utf8(args.data).splitlines()
        if not prompts:
            raise DataError("no prompts (the file is empty); expected one prompt a line", args.data)
    outputs = []
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start : start + args.batch_size]
        ids = [_prompt_ids(tok, text, seq2seq) for text in chunk]
        new = run(
            model,
            ids,
            args.max_new_tokens,
            strategy=args.strategy,
            num_beams=args.num_beams,
            top_k=args.top_k,
            top_p=args.top_p,
            temperature=args.temperature,
            seed=args.seed,
            eos_id=tok.eos_id,
            use_cache=not args.no_cache,
            pad_id=tok.pad_id,
        )
        # One output per line: line breaks inside a generated text become spaces.
        outputs += [" ".join(tok.decode(row, skip_special_tokens=True).splitlines()) for row in new]
    if args.out:
        write_text_file(args.out, "".join(line + "\n" for line in outputs), args.overwrite)
        return {"out": args.out, "prompts": len(prompts)}
    for line in outputs:
        print(line)
    return None


# SAMP's commands (quantize, bench), distill's, continual learning's and PEFT's (merge;
# finetune's --peft options) live in their own modules and register here.
from pretrainkit.cli import (  # noqa: E402
    continual_commands,  # noqa: F401
    distill_commands,  # noqa: F401
    peft_commands,  # noqa: F401
    samp_commands,  # noqa: F401
)
