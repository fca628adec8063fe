"""SAMP: self-adaptive mixed-precision inference.

Each encoder layer runs in one of three modes — float (the float partner: bf16 on CPUs with
native bf16, else fp32), FFN-only INT8 or full INT8 — chosen by a measured search: the fastest
plan within a metric tolerance, the most accurate under a latency budget, or the knee of the
accuracy/latency frontier. Embeddings, LayerNorm, softmax and the task head stay in float.

    qmodel = pretrainkit.samp.quantize(model, "calib.tsv", "select.tsv", tolerance=0.5)
    qmodel(**batch).logits                      # used like the original
    pretrainkit.samp.save_quantized(qmodel, "q-model")
    pretrainkit.load("q-model")                 # no calibration again
"""

from pretrainkit.samp.api import plan_of, quantize, save_quantized
from pretrainkit.samp.plan import MODES, PLAN_FILE, Plan

__all__ = ["MODES", "PLAN_FILE", "Plan", "plan_of", "quantize", "save_quantized"]
