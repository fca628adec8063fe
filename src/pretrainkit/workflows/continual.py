"""Parameter-efficient continual learning: one backbone, a sequence of tasks, each task
changing only the parameter groups chosen for it, every old task keeping its head.

For each task in turn: measure which backbone groups matter to it and little to the tasks
before (``pretrainkit.continual.selection``), train those groups and the task's head through
the one training loop (``fit`` of ``finetune``, with a ``ContinualModel``), pulled toward their
old values (EWC with the old tasks' Fisher, or L2-SP), save the change as a delta
(``pretrainkit.continual.deltas``), measure this task's Fisher for the next ones, and evaluate
every task seen so far with the new backbone and its own head.

The run folder::

    RUN/continual.json        options, base (path + sha256), every finished step: groups, sizes,
                              times, and every task's dev metrics after it
    RUN/fisher.safetensors    the old tasks' accumulated Fisher (run state for EWC / selection)
    RUN/NN-NAME/              task NN's fine-tuning run; its model/ is the delta folder
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pretrainkit.config.typed import from_dict
from pretrainkit.continual.deltas import (
    DELTA_WEIGHTS,
    apply_delta,
    body_state,
    read_delta,
    state_sha256,
)
from pretrainkit.continual.module import ContinualModel, attach_slots, fold_slots
from pretrainkit.continual.options import ContinualOptions, TaskSpec, read_task_spec
from pretrainkit.continual.selection import (
    backbone_fraction,
    backbone_size,
    body_parameters,
    choose,
    group_scores,
    importance,
    normalized,
    parameter_groups,
    top_layer_groups,
)
from pretrainkit.data import BatchIterator
from pretrainkit.distributed import ParallelConfig
from pretrainkit.errors import CheckpointError, ConfigError, OutputExistsError
from pretrainkit.fileio import (
    atomic_file,
    read_json_object,
    read_safetensors,
)
from pretrainkit.model import Model
from pretrainkit.peft.core import BODY, head_parameters
from pretrainkit.tasks import Task, build_task
from pretrainkit.tasks.base import task_from_record
from pretrainkit.workflows.finetune import _loaded, evaluate_task, fit, task_model
from pretrainkit.workflows.run_folder import run_folder

log = logging.getLogger(__name__)

RECORD = "continual.json"
FISHER = "fisher.safetensors"
FORMAT = 1


@dataclass
class _Item:
    """One task of the sequence, read and checked before anything is written."""

    spec: TaskSpec
    task: Task
    train: Any
    dev: Any


def _read_items(paths: list[str | os.PathLike]) -> list[_Item]:
    from pretrainkit.training import TrainConfig

    if not paths:
        raise ConfigError("continual: give at least one task file (--tasks T1.yaml ...)")
    specs = [read_task_spec(p, TrainConfig.field_names()) for p in paths]
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(
                f"{spec.path}: task name {spec.name!r} is also the name of {seen[spec.name]}; "
                "every task of the sequence needs its own name (key 'name')"
            )
        seen[spec.name] = spec.path
    items = []
    for spec in specs:
        try:
            task = build_task(spec.task, spec.options)
            probe = {**spec.training, "steps": spec.steps or 1, "warmup": 0}
            from_dict(TrainConfig, probe, "training options")  # bad values before any work
        except ConfigError as error:
            raise ConfigError(f"{spec.path}: {error}") from None
        train = task.read(spec.train, columns=spec.columns)
        task.fit_labels(train)
        dev = task.read(spec.dev, columns=spec.columns)
        items.append(_Item(spec, task, train, dev))
    return items


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a continual run (no {RECORD})")
    record = read_json_object(path)
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a continual record of format {FORMAT}")
    for key in ("base", "options", "tasks", "steps"):
        if key not in record:
            raise CheckpointError(f"{path}: missing {key!r}")
    return record


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _check_out(out: Path, resume: bool, overwrite: bool) -> bool:
    """Whether ``out`` continues an earlier run; an existing folder that is not a continual run
    is never replaced."""
    existed = out.is_dir() and any(out.iterdir())
    if existed and not (out / RECORD).is_file():
        raise OutputExistsError(
            f"{out}: exists and is not a continual run ({RECORD} missing); choose another --out"
        )
    return existed and resume


def _finished(out: Path) -> bool:
    """A run with a finished task is kept when a later one fails (``--resume`` continues)."""
    return (out / RECORD).is_file() and bool(_read_record(out)["steps"])


def _importance_batches(item: _Item, model: Model, seed: int, count: int) -> list[dict]:
    """``count`` training batches of the task (the same ones for the same seed)."""
    stream = item.task.stream(item.train, model.tokenizer, seed, 0, 1)
    pad_id = model.tokenizer.pad_id if model.tokenizer is not None else 0
    batches = BatchIterator(stream, item.spec.batch_size, pad_id, collate_fn=item.task.collate)
    return [batches.next_batch() for _ in range(count)]


def _copy_body(source: Model, target: Model) -> None:
    for slot in BODY:
        a, b = getattr(source, slot, None), getattr(target, slot, None)
        if a is not None and b is not None:
            b.load_state_dict(a.state_dict())


def _head_model(current: Model, item: _Item, head: dict[str, torch.Tensor]) -> Model:
    """The task model of an earlier task: today's backbone with that task's own head."""
    net = task_model(current, item.task)
    expected = {k for k in net.state_dict() if k.split(".", 1)[0] == "targets"}
    if set(head) - expected:
        raise CheckpointError(f"head tensors {sorted(set(head) - expected)} fit no head")
    net.load_state_dict(head, strict=False)
    net.tie_weights()
    return net.eval()


def _model_bytes(model: Model) -> int:
    tied = set(model.tied_parameters())
    return sum(t.numel() * t.element_size() for k, t in model.state_dict().items() if k not in tied)


def summarize(steps: list[dict[str, Any]], metric_of: dict[str, str]) -> dict[str, Any]:
    """The accuracy matrix (task × after step, each task's main metric), each task's
    forgetting (its best value before the last step minus its value after the last), the
    new-task values (each task right after its own step) and the totals."""
    names = [step["task"] for step in steps]
    matrix = {
        name: [step["metrics"].get(name, {}).get(metric_of[name]) for step in steps]
        for name in names
    }
    forgetting = {}
    for k, name in enumerate(names[:-1]):
        row = [v for v in matrix[name][k:-1] if v is not None]
        if row and matrix[name][-1] is not None:
            forgetting[name] = max(row) - matrix[name][-1]
    new = {name: matrix[name][k] for k, name in enumerate(names)}
    return {
        "metric": metric_of,
        "matrix": matrix,
        "new_task": new,
        "forgetting": forgetting,
        "average_forgetting": sum(forgetting.values()) / len(forgetting) if forgetting else 0.0,
        "average_final": sum(matrix[n][-1] for n in names) / len(names),
        "train_seconds": sum(s["seconds"]["train"] for s in steps),
        "max_trainable_share": max(s["trainable_share"] for s in steps),
        "max_delta_share": max(s["delta_bytes"] / s["full_bytes"] for s in steps),
    }


def continual(
    model: str | os.PathLike,
    tasks: list[str | os.PathLike],
    out: str | os.PathLike,
    options: ContinualOptions | dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the backbone of ``model`` (a folder) on ``tasks`` (task files) in order.

    Every task file, its data and every option are checked before anything is written. With
    ``resume`` the finished tasks are re-applied from their deltas (hashes checked) and the
    unfinished one continues from its last checkpoint. Returns the run's summary.
    """
    from pretrainkit.peft.folder import base_reference
    from pretrainkit.peft.options import is_peft_folder

    opts = (
        options
        if isinstance(options, ContinualOptions)
        else from_dict(ContinualOptions, dict(options or {}), "continual options")
    )
    if isinstance(model, Model):
        raise ConfigError("continual needs the base model as a folder (recorded by path and hash)")
    if is_peft_folder(model):
        raise ConfigError(f"{model}: a PEFT folder; `pretrainkit merge` it first")
    items = _read_items(list(tasks))
    base_ref = base_reference(model)
    current = _loaded(Path(model))
    top_layer_groups(current, parameter_groups(current), opts.top_layers)  # fails before writing
    out = Path(out)
    record: dict[str, Any] = {
        "format": FORMAT,
        "base": dataclasses.asdict(base_ref),
        "base_body_sha256": state_sha256(body_state(current)),
        "options": dataclasses.asdict(opts),
        "tasks": [
            {"name": i.spec.name, "task": i.spec.task, "file": str(i.spec.path)} for i in items
        ],
        "steps": [],
    }
    metric_of = {i.spec.name: i.task.metric_names[0] for i in items}
    continuing = _check_out(out, resume, overwrite)
    with run_folder(out, resume, overwrite, resumable=_finished) as folder:
        old_fisher: dict[str, torch.Tensor] | None = None
        heads: dict[str, dict[str, torch.Tensor]] = {}
        if continuing:
            earlier = _read_record(folder)
            # Options a run written before an option existed did not record: its default.
            earlier["options"] = dataclasses.asdict(
                from_dict(ContinualOptions, dict(earlier["options"]), f"{folder}/{RECORD}")
            )
            for key in ("base", "options", "tasks"):
                if earlier[key] != record[key]:
                    raise ConfigError(
                        f"{folder}/{RECORD}: --resume needs the same {key} as the run it "
                        f"continues (recorded {earlier[key]!r}, given {record[key]!r})"
                    )
            record = earlier
            for step in record["steps"]:  # the finished tasks, bit for bit
                apply_delta(current, folder / step["folder"] / "model")
                _, tensors = read_delta(folder / step["folder"] / "model")
                heads[step["task"]] = {k: tensors[k] for k in step["head_tensors"]}
            if record.get("fisher_tasks", 0):
                old_fisher = read_safetensors(folder / FISHER)
            if record.get("fisher_tasks", 0) != len(record["steps"]) and _keeps_fisher(opts):
                raise CheckpointError(
                    f"{folder}: {FISHER} holds {record.get('fisher_tasks', 0)} task(s) but "
                    f"{len(record['steps'])} are finished; the run cannot be continued"
                )
        _write_json(folder / RECORD, record)
        for k, item in enumerate(items, 1):
            if k <= len(record["steps"]):
                continue
            step = _train_task(k, item, items, current, folder, opts, record, old_fisher, heads)
            if _keeps_fisher(opts):  # this task's Fisher, for the tasks after it
                started = time.perf_counter()
                net = _head_model(current, item, heads[item.spec.name])
                batches = _importance_batches(item, net, opts.seed, opts.importance_batches)
                fisher = normalized(importance(net, body_parameters(net), batches, "fisher"))
                old_fisher = (
                    fisher
                    if old_fisher is None
                    else {n: old_fisher.get(n, torch.zeros_like(f)) + f for n, f in fisher.items()}
                )
                from safetensors.torch import save_file

                with atomic_file(folder / FISHER, overwrite=True) as tmp:
                    save_file({n: f.contiguous() for n, f in old_fisher.items()}, str(tmp))
                step["seconds"]["fisher"] = time.perf_counter() - started
                record["fisher_tasks"] = k
            started = time.perf_counter()
            for prev in items[:k]:  # every task so far, on today's backbone with its own head
                net = _head_model(current, prev, heads[prev.spec.name])
                step["metrics"][prev.spec.name] = evaluate_task(net, prev.task, prev.dev)
            step["seconds"]["evaluate"] = time.perf_counter() - started
            record["steps"].append(step)
            record.pop("in_progress", None)
            record["summary"] = summarize(record["steps"], metric_of)
            _write_json(folder / RECORD, record)
            log.info(
                "after task %d (%s): %s",
                k,
                item.spec.name,
                ", ".join(
                    f"{name} {metric_of[name]} {m[metric_of[name]]:.4f}"
                    for name, m in step["metrics"].items()
                ),
            )
        return {"run": str(folder), **record["summary"]}


def _keeps_fisher(opts: ContinualOptions) -> bool:
    return opts.regularizer == "ewc" or (opts.selection == "importance" and opts.fraction < 1.0)


def _train_task(
    k: int,
    item: _Item,
    items: list[_Item],
    current: Model,
    folder: Path,
    opts: ContinualOptions,
    record: dict[str, Any],
    old_fisher: dict[str, torch.Tensor] | None,
    heads: dict[str, dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """Choose the groups of task ``k``, train them and its head, fold the result into
    ``current``; the step's record (metrics are added by the caller)."""
    name = item.spec.name
    step_dir = folder / f"{k:02d}-{name}"
    parent = state_sha256(body_state(current))
    holder: list[ContinualModel] = []
    info: dict[str, Any] = {}
    earlier = record.get("in_progress")

    def wrap(net: Model) -> tuple[torch.nn.Module, dict[str, Any]]:
        started = time.perf_counter()
        groups = parameter_groups(net, opts.lora_rank)
        by_name = {g.name: g for g in groups}
        # The budget is a share of the whole backbone (or, with budget_scope model, of the
        # backbone and this task's head together); --top-layers narrows the candidates.
        candidates, total = top_layer_groups(net, groups, opts.top_layers), backbone_size(groups)
        head = set(head_parameters(net))  # what ContinualModel trains besides the body
        head_size = sum(p.numel() for n, p in net.named_parameters() if n in head)
        fraction = opts.fraction
        if opts.budget_scope == "model" and fraction < 1.0:
            fraction = backbone_fraction(fraction, total, head_size, opts.budget)
        scores = None
        if earlier is not None and earlier.get("step") == k:  # resumed: the same choice
            chosen = [by_name[g] for g in earlier["groups"]]
        elif opts.fraction >= 1.0:
            chosen = candidates
        elif opts.selection == "random":
            chosen = choose(candidates, fraction, None, seed=opts.seed + k, total=total)
        else:
            parameters = body_parameters(net)
            batches = _importance_batches(item, net, opts.seed, opts.importance_batches)
            new = normalized(importance(net, parameters, batches, opts.importance))
            scores = group_scores(groups, new, old_fisher)
            chosen = choose(candidates, fraction, scores, total=total)
        whole = [t for g in chosen if not g.lora_rank for t in g.tensors]
        parameters = body_parameters(net)
        slots = attach_slots(net, {g.tensors[0]: g.lora_rank for g in chosen if g.lora_rank})
        body = whole + [factor for a, b, _ in slots.values() for factor in (a, b)]
        weight = opts.reg_weight
        fisher = None
        if opts.regularizer == "none" or (opts.regularizer == "ewc" and old_fisher is None):
            weight = 0.0  # EWC before any old task: nothing to protect yet
        elif opts.regularizer == "ewc":
            assert old_fisher is not None
            fisher = {
                t: old_fisher.get(t, torch.zeros_like(parameters[t])) for t in whole + list(slots)
            }
        extra = {
            k2: v for k2, v in body_state(current).items() if k2 not in body_state(net)
        }  # backbone tensors this task model leaves out (a decoder): in the hash all the same
        cm = ContinualModel(
            net,
            body,
            {t: parameters[t] for t in whole},
            fisher,
            weight,
            {"task": name, "step": k, "parent_sha256": parent, "base": record["base"]},
            extra,
            slots,
        )
        holder.append(cm)
        trained = sum(g.size for g in chosen)
        info.update(
            groups=[g.name for g in chosen],
            body_parameters=total,
            backbone_budget=fraction,
            trainable_body=trained,
            trainable_head=head_size,
            regularizer=opts.regularizer if weight > 0 else "none",
            scores={g: round(s, 6) for g, s in (scores or {}).items()},
            select_seconds=time.perf_counter() - started,
        )
        record["in_progress"] = {"step": k, "groups": info["groups"]}
        _write_json(folder / RECORD, record)
        return cm, {"continual": {key: v for key, v in info.items() if key != "scores"}}

    resume_step = step_dir.is_dir() and any(step_dir.iterdir())
    started = time.perf_counter()
    train = dict(item.spec.training)
    if item.spec.steps is not None:
        train["steps"] = item.spec.steps
    fit(
        item.task,
        current,
        item.train,
        item.dev,
        step_dir,
        train=train,
        batch_size=item.spec.batch_size,
        epochs=item.spec.epochs,
        parallel=ParallelConfig("single"),
        resume=resume_step,
        overwrite=False,
        source={"model": record["base"]["path"], "train": str(item.spec.train)},
        wrap=wrap,
    )
    seconds = time.perf_counter() - started
    cm = holder[0]
    net = cm.model
    fold_slots(net, cm.slots)  # as applying the delta folds them: the hash check below holds
    _copy_body(net, current)
    heads[name] = {t: net.state_dict()[t].detach().clone() for t in cm.head}
    delta_record, _ = read_delta(step_dir / "model")
    now = state_sha256(body_state(current))
    if now != delta_record["sha256"]:  # the promise of the chain, checked where it is made
        raise CheckpointError(f"{step_dir}/model: the saved delta does not reproduce the backbone")
    return {
        "step": k,
        "task": name,
        "folder": step_dir.name,
        "parent_sha256": parent,
        "sha256": now,
        "head_tensors": cm.head,
        **{key: v for key, v in info.items() if key != "select_seconds"},
        "trainable_share": info["trainable_body"] / info["body_parameters"],
        "delta_bytes": (step_dir / "model" / DELTA_WEIGHTS).stat().st_size,
        "full_bytes": _model_bytes(net),
        "seconds": {"select": info["select_seconds"], "train": seconds - info["select_seconds"]},
        "metrics": {},
    }


def export_task(
    run: str | os.PathLike,
    task: str,
    out: str | os.PathLike,
    step: int | None = None,
    base: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """A plain fine-tuned model folder for ``task`` of a continual run: the base backbone with
    the deltas of steps 1..``step`` (default: all finished) applied, hashes checked, and the
    task's own head. ``base``: the base folder if it moved (its weights must hash the same)."""
    from pretrainkit.fileio import check_output
    from pretrainkit.folders import load
    from pretrainkit.peft.folder import base_reference

    folder = Path(run)
    record = _read_record(folder)
    steps = record["steps"]
    if not steps:
        raise CheckpointError(f"{folder}: no task is finished yet")
    last = len(steps) if step is None else step
    if not isinstance(last, int) or not 1 <= last <= len(steps):
        raise ConfigError(f"step must be from 1 to {len(steps)} (the finished tasks), got {step!r}")
    names = [s["task"] for s in steps[:last]]
    if task not in names:
        raise ConfigError(
            f"{folder}: no task {task!r} among the tasks finished by step {last}: "
            f"{', '.join(names)}"
        )
    check_output(out, overwrite, folder=True)
    base_path = Path(base) if base is not None else Path(record["base"]["path"])
    reference = base_reference(base_path)
    if reference.sha256 != record["base"]["sha256"]:
        raise CheckpointError(
            f"{folder}: the base model changed: {reference.path} has sha256 "
            f"{reference.sha256[:16]}…, {RECORD} records {record['base']['sha256'][:16]}…"
        )
    current = load(reference.path)
    for s in steps[:last]:
        apply_delta(current, folder / s["folder"] / "model")
    own = steps[names.index(task)]
    delta_dir = folder / own["folder"] / "model"
    _, tensors = read_delta(delta_dir)
    task_record = read_json_object(delta_dir / "task.json")
    spec = task_from_record(task_record, str(delta_dir))
    net = task_model(current, spec)
    head = {t: tensors[t] for t in own["head_tensors"]}
    expected = {k for k in net.state_dict() if k.split(".", 1)[0] == "targets"}
    if set(head) - expected:
        raise CheckpointError(
            f"{delta_dir}: head tensors {sorted(set(head) - expected)} fit no head"
        )
    net.load_state_dict(head, strict=False)
    net.tie_weights()
    net.task_record = task_record
    return net.save(out, overwrite=overwrite)
