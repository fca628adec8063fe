"""Parameter-efficient fine-tuning (issue 15): LoRA, bottleneck adapters, BitFit and
LayerNorm-only, injected into a built ``Model`` without changing its code.

``options`` is free of torch (the command line reads it); ``core`` holds the method registry and
the wrapper the training loop trains; ``folder`` saves, loads and merges PEFT model folders;
``hf_export`` writes LoRA in the format of the HF ``peft`` library.
"""
