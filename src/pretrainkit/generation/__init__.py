"""Text generation for decoder-only models (causal encoder + ``lm`` target) with a KV cache."""

from pretrainkit.encoders.transformer import KVCache
from pretrainkit.generation.generate import STRATEGIES, check_generative, generate

__all__ = ["STRATEGIES", "KVCache", "check_generative", "generate"]
