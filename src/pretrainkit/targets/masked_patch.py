"""Masked-patch image modelling (SimMIM / MAE-style pixel regression): the head predicts the
normalised pixels of every patch; the loss counts the masked patches only."""

from __future__ import annotations

import torch
from torch import nn

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput

LOSSES = ("l1", "l2")


@TARGETS.register("masked_patch")
class MaskedPatchTarget(Target):
    """A linear map from each patch's hidden state to its pixels.

    ``labels`` ``[b, patches, patch_pixels]`` hold the normalised pixels of each patch (in the
    order the patch embedding reads them) and NaN for the patches that were not masked, the way
    -100 marks the tokens an MLM head does not predict. Position 0 ([CLS]) is not a patch.

    Args:
        hidden_size: model width.
        patch_pixels: channels x patch_size²; filled in from the model's patch embedding.
        loss: ``l2`` (mean squared error, MAE) or ``l1`` (mean absolute error, SimMIM), averaged
            over the pixels of the masked patches.
    """

    def __init__(self, hidden_size: int, patch_pixels: int, loss: str = "l2"):
        super().__init__()
        if patch_pixels < 1:
            raise ConfigError("masked_patch needs a model with a 'patch' embedding part")
        check_choice(loss, LOSSES, "loss")
        self.loss = loss
        self.decoder = nn.Linear(hidden_size, patch_pixels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> TargetOutput:
        predicted = self.decoder(hidden_states[:, 1:])  # [b, patches, patch_pixels]
        if labels is None:
            return TargetOutput(None, predicted)
        if labels.shape != predicted.shape:
            raise ValueError(
                f"masked_patch labels must be {tuple(predicted.shape)}, got {tuple(labels.shape)}"
            )
        masked = ~labels.isnan().any(-1)  # [b, patches]
        gold = labels[masked].float()  # [masked, patch_pixels]
        guess = predicted[masked].float()
        if self.loss == "l2":
            loss = nn.functional.mse_loss(guess, gold)
        else:
            loss = nn.functional.l1_loss(guess, gold)
        if not len(gold):  # nothing masked in this batch: a zero that keeps the graph
            loss = predicted.sum() * 0.0
        return TargetOutput(loss, predicted, {"masked_patch_loss": loss.detach()})
