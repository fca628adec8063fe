"""Conformance sample of the ``prefixlm`` objective: an encoder (bert-tiny) with an ``lm`` head
continues grammar documents from their opening sentences (the decoder-only case is in
tests/test_objectives_prefix.py)."""

from objective_samples import ObjectiveSample

SAMPLE = ObjectiveSample("bert-tiny")
