"""HuggingFace ⇄ pretrainkit conversion: one declarative key map per family, one converter.

Families (by HF ``model_type``): ``bert`` (also sentence-transformers MiniLM), ``roberta``,
``xlm-roberta``, ``albert``, ``gpt2`` and ``llama``; their tokenizers in ``convert.tokenizer_files``. See ``convert.spec`` for the table format and ``convert.hf``
for the converter.
"""

from pretrainkit.convert import albert, bert, gpt2, llama  # noqa: F401  (register the families)
from pretrainkit.convert.hf import PASSTHROUGH, convert_from_hf, convert_to_hf, get_family
from pretrainkit.convert.spec import FAMILIES, Family, Head

__all__ = [
    "FAMILIES",
    "PASSTHROUGH",
    "Family",
    "Head",
    "convert_from_hf",
    "convert_to_hf",
    "get_family",
]
