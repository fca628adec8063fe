"""Conformance sample of the ``t5`` objective: a tiny T5 (2+2 layers) on the plain corpus."""

from objective_samples import ObjectiveSample

SEQ2SEQ_BODY = {
    "encoder.num_layers": 2,
    "encoder.head_dim": 32,
    "decoder.num_layers": 2,
    "decoder.num_heads": 2,
    "decoder.head_dim": 32,
    "decoder.ffn_size": 128,
    "tgt_embedding.max_positions": 64,
}

SAMPLE = ObjectiveSample("t5-small", SEQ2SEQ_BODY)
