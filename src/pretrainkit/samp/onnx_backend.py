"""ONNX Runtime backend: the encoder stack exported to ONNX with its module scopes as node names
(``/layers.3/feed_forward/up/MatMul``), INT8 by ``quantize_dynamic`` with the float layers'
GEMMs excluded by name — and every exclusion checked against the graph.

Only the encoder runs in ONNX Runtime; the embedding and the task head stay the model's own
fp32 torch modules. ONNX Runtime's CPU float path is fp32, so plans here use fp32 as partner.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.fileio import inside
from pretrainkit.model import Model
from pretrainkit.samp.plan import Plan, check_plan_fits, encoder_layers, int8_gemms, layer_gemms

ONNX_FILE = "encoder.onnx"


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose tensors name external data files outside its folder: a
    quantized folder may come from someone else, and a path in it must not make us read
    elsewhere (DESIGN.md §7)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # protobuf DecodeError and friends
        raise CheckpointError(f"{path}: not a readable ONNX model: {error}") from None
    for tensor in graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                inside(path.parent, entry.value, path)


class OrtEncoder(nn.Module):
    """Stands in for ``model.encoder``: runs the exported stack in an ONNX Runtime session."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        check_external_data(self.path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, **unused):
        if any(v is not None for v in unused.values()):
            raise ConfigError("the ONNX Runtime backend runs encoder-only models")
        if attention_mask is None:
            attention_mask = torch.ones(x.shape[:2], dtype=torch.long)
        (out,) = self.session.run(
            None,
            {
                "hidden": x.detach().float().cpu().numpy(),
                "attention_mask": attention_mask.detach().long().cpu().numpy(),
            },
        )
        return torch.from_numpy(out)


def export_encoder(encoder: nn.Module, hidden_size: int, path: Path) -> Path:
    """Trace the encoder to ONNX; node names keep module scopes (``/layers.0/attention/...``).

    The example batch has padding, so the traced graph takes the masked attention path, which
    is also exact for batches without padding.
    """
    encoder = encoder.eval()
    x = torch.randn(2, 8, hidden_size)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that the padding check becomes a constant: intended, see above.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (x, mask),
            str(path),
            dynamo=False,  # the TorchScript exporter names nodes after their module scopes
            input_names=["hidden", "attention_mask"],
            output_names=["output"],
            dynamic_axes={
                "hidden": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "output": {0: "batch", 1: "seq"},
            },
            opset_version=17,
        )
    return path


def gemm_node_names(
    model: Model, plan: Plan, graph_nodes: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(INT8 node names, excluded node names) for ``plan``.

    Every Linear of every layer maps to ``/layers.{i}/{scope}/MatMul``; a name missing from the
    graph is an error (an exclusion that matched nothing would silently quantize a layer). Other
    MatMuls (attention scores, attention × values) are always excluded: they are not GEMMs with
    weights and stay float, like softmax.
    """
    quantize: list[str] = []
    exclude: list[str] = []
    for i, (block, mode) in enumerate(zip(encoder_layers(model), plan.modes)):
        int8 = set(int8_gemms(block, mode))
        for name in layer_gemms(block):
            node = f"/layers.{i}/{name.replace('.', '/')}/MatMul"
            if graph_nodes.get(node) != "MatMul":
                raise ConfigError(
                    f"ONNX export: no MatMul node named {node!r} for layer {i} {name}; "
                    "the exclusion list would not match the graph"
                )
            (quantize if name in int8 else exclude).append(node)
    named = set(quantize) | set(exclude)
    exclude += [n for n, op in graph_nodes.items() if op == "MatMul" and n not in named]
    return quantize, exclude


def quantize_onnx(float_path: Path, out_path: Path, quantize: list[str], exclude: list[str]):
    """``quantize_dynamic`` (per-channel INT8 weights) and the check that it did what we asked."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():  # quantize_dynamic warns on every call about pre-processing
        quantize_dynamic(
            str(float_path),
            str(out_path),
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
        )
    nodes = {
        n.name: n.op_type for n in onnx.load(str(out_path), load_external_data=False).graph.node
    }
    still_float = [n for n in exclude if nodes.get(n) != "MatMul"]
    if still_float:
        raise ConfigError(f"ONNX Runtime quantized excluded nodes: {still_float[:5]}")
    integer = sum(op == "MatMulInteger" for op in nodes.values())
    if integer != len(quantize) or any(n in nodes for n in quantize):
        raise ConfigError(
            f"ONNX Runtime quantized {integer} MatMuls, the plan asks for {len(quantize)}"
        )
    return {"quantized": len(quantize), "excluded": len(exclude)}


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def build_onnx(model: Model, plan: Plan, workdir: Path | None = None) -> Model:
    """Replace ``model.encoder`` (in place) by an ONNX Runtime session running ``plan``."""
    import onnx

    check_plan_fits(plan, model)
    if plan.float_dtype != "fp32":
        raise ConfigError("the onnxruntime backend runs its float layers in fp32 on CPU")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="samp-onnx-"))
    float_path = workdir / "encoder-float.onnx"
    if not float_path.is_file():
        export_encoder(model.encoder, model.config.hidden_size, float_path)
    nodes = {n.name: n.op_type for n in onnx.load(str(float_path)).graph.node}
    quantize, exclude = gemm_node_names(model, plan, nodes)
    path = workdir / f"encoder-{plan.name}.onnx"
    if quantize:
        quantize_onnx(float_path, path, quantize, exclude)
    else:
        shutil.copyfile(float_path, path)
    model.encoder = OrtEncoder(path)
    return model


def attach_saved_encoder(skeleton: Model, plan: Plan, directory: Path) -> Model:
    path = directory / ONNX_FILE
    if not path.is_file():
        raise ConfigError(
            f"{directory}: the plan's backend is onnxruntime but {ONNX_FILE} is absent"
        )
    skeleton.encoder = OrtEncoder(path)
    return skeleton


def save_onnx_encoder(model: Model, directory: Path) -> None:
    encoder: Any = model.encoder
    shutil.copyfile(encoder.path, directory / ONNX_FILE)
