"""``pretrainkit.load``: any model folder the toolkit writes, including the kinds that need a
package above the model to rebuild (a SAMP-quantized folder), so ``model.py`` stays below them.
"""

from __future__ import annotations

import os

from pretrainkit.model import SAMP_PLAN, Model, model_folder
from pretrainkit.model import load as load_plain


def load(directory: str | os.PathLike) -> Model:
    """Load a model folder: written by ``Model.save``, ``finetune`` / ``pretrain`` (a run
    folder loads its ``model/``), ``convert --from-hf`` or ``quantize``; a PEFT folder
    (``finetune --peft``) loads its base model and applies its trained tensors.

    The model comes back in evaluation mode (dropout off), as a loaded model is most often
    used for inference; training code calls ``train()`` (the trainer does)."""
    from pretrainkit.peft.options import is_peft_folder

    if is_peft_folder(directory):
        from pretrainkit.peft.folder import load_peft

        return load_peft(directory).model.eval()
    folder = model_folder(directory)
    if (folder / SAMP_PLAN).is_file():  # quantized by `pretrainkit quantize`
        from pretrainkit.samp.backends import prepare_quantized

        return load_plain(folder, prepare=prepare_quantized).eval()
    return load_plain(folder).eval()
