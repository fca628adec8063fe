"""Conformance sample of the ``bart`` objective: a tiny BART (2+2 layers) on the plain corpus."""

from objective_samples import ObjectiveSample

SAMPLE = ObjectiveSample(
    "bart-base",
    {
        "encoder.num_layers": 2,
        "decoder.num_layers": 2,
        "decoder.num_heads": 2,
        "decoder.ffn_size": 128,
        "tgt_embedding.max_positions": 64,
    },
)
