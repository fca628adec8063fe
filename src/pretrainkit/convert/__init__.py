"""HuggingFace ⇄ pretrainkit conversion: one declarative key map per family, one converter.

Families (by HF ``model_type``): ``bert`` (also sentence-transformers MiniLM), ``roberta``,
``xlm-roberta``, ``albert``, ``gpt2``, ``llama``, and the encoder-decoders ``t5``, ``bart`` and
``pegasus``, ``vit`` (images) and ``speech_to_text`` (speech) — ``family_names()`` lists them; their tokenizers in
``convert.tokenizer_files``. See ``convert.spec`` for the table format and ``convert.hf`` for
the converter.
"""

from pretrainkit.convert import (  # noqa: F401  (register the families)
    albert,
    bart,
    bert,
    gpt2,
    llama,
    speech2text,
    t5,
    vit,
)
from pretrainkit.convert.hf import (
    PASSTHROUGH,
    convert_from_hf,
    convert_to_hf,
    family_names,
    get_family,
)
from pretrainkit.convert.spec import FAMILIES, Family, Head

__all__ = [
    "FAMILIES",
    "PASSTHROUGH",
    "Family",
    "Head",
    "convert_from_hf",
    "convert_to_hf",
    "family_names",
    "get_family",
]
