"""Pre-training data: corpus -> token shards (`preprocess`) -> streamed, masked batches.

Names are imported on first use so that preprocessing workers, which only need the tokenizer,
do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pretrainkit.lazy import lazy_exports

_EXPORTS = {
    "preprocess": "pretrainkit.data.preprocessing",
    "OBJECTIVES": "pretrainkit.data.objectives",
    "Shards": "pretrainkit.data.shards",
    "InstanceStream": "pretrainkit.data.streams",
    "pretraining_stream": "pretrainkit.data.streams",
    "mask_tokens": "pretrainkit.data.masking",
    "BatchIterator": "pretrainkit.data.batching",
    "collate": "pretrainkit.data.batching",
    "read_documents": "pretrainkit.data.corpus",
}

if TYPE_CHECKING:
    from pretrainkit.data.batching import BatchIterator, collate
    from pretrainkit.data.corpus import read_documents
    from pretrainkit.data.masking import mask_tokens
    from pretrainkit.data.objectives import OBJECTIVES
    from pretrainkit.data.preprocessing import preprocess
    from pretrainkit.data.shards import Shards
    from pretrainkit.data.streams import InstanceStream, pretraining_stream

__all__ = [
    "OBJECTIVES",
    "BatchIterator",
    "InstanceStream",
    "Shards",
    "collate",
    "mask_tokens",
    "preprocess",
    "pretraining_stream",
    "read_documents",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
