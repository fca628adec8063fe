"""Training on perturbed inputs (``PerturbOptions``): a wrapper of a task model that the one
training loop trains like the model itself (``TrainableModel``).

Every step runs the clean example, builds a perturbation of its word embeddings, runs the
perturbed example, and sums: the clean gold loss, the perturbed gold loss (``perturbed_weight``),
KL(clean ‖ perturbed) predictions (``robust_targets``) and the attention-map distance
(``attention_pull``). The perturbation is added to the word-embedding part's output by a hook,
so the model's code does not change; ``save`` writes the wrapped model alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.layers.attention import record_attention
from pretrainkit.model import Model, ModelOutput
from pretrainkit.perturb.options import PerturbOptions


class Perturbed(nn.Module):
    """``model`` trained on clean and perturbed copies of every example.

    Args:
        model: a task model with a ``word`` embedding part and a transformer encoder.
        options: which perturbation and which terms.
        centroid_counts: Embedding-Push ``centroid``: token counts per language ``[L, vocab]``,
            English first (``perturb.centroids.token_counts``).
    """

    def __init__(
        self,
        model: Model,
        options: PerturbOptions,
        centroid_counts: torch.Tensor | None = None,
    ):
        super().__init__()
        if not options.active:
            raise ConfigError("Perturbed: no perturbation chosen (adversarial or embedding_push)")
        parts = getattr(model.embedding, "parts", {})
        if "word" not in parts:
            raise ConfigError("perturbed training moves word embeddings: the model has none")
        if model.decoder is not None:
            raise ConfigError("perturbed training supports encoder models (no decoder)")
        if options.embedding_push == "centroid" and centroid_counts is None:
            raise ConfigError("embedding_push centroid needs the languages' token counts")
        self.model = model
        self.options = options
        # Token counts, not vectors: a centroid is recomputed from the current table each step.
        self.register_buffer("centroid_counts", centroid_counts, persistent=False)
        self._delta: torch.Tensor | None = None
        self._word: torch.Tensor | None = None
        parts["word"].register_forward_hook(self._shift)
        layers = model.config.encoder.num_layers
        self._pull = (
            list(range(layers))
            if options.pull_layers == "all"
            else [int(p) - 1 for p in options.pull_layers.split(",")]
        )
        if any(i >= layers for i in self._pull):
            raise ConfigError(f"pull_layers: {options.pull_layers} exceeds the {layers} layers")

    def _shift(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        """The word part's output, plus the perturbation when one is set; kept for gradients."""
        if self._delta is not None:
            output = output + self._delta.to(output.dtype)
        elif self.training and not output.requires_grad:  # a frozen table: still a leaf to probe
            output = output.detach().requires_grad_(True)
        self._word = output
        return output

    # -- the training contract ---------------------------------------------------------------

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return self.model.trainable_parameters()

    def save(
        self,
        directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> Path:
        if state_dict is not None:
            state_dict = {
                k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")
            }
        return self.model.save(directory, state_dict, overwrite)

    def load_weights(self, directory: str | os.PathLike) -> None:
        self.model.load_weights(directory)

    def forward(self, **batch: Any) -> ModelOutput:
        options = self.options
        pull = options.attention_pull > 0
        clean, clean_maps = self._run(batch, pull)
        if clean.loss is None:
            raise ConfigError("perturbed training needs labelled batches")
        delta = self._perturbation(batch, clean.loss)
        self._delta = delta
        try:
            pushed, pushed_maps = self._run(batch, pull)
        finally:
            self._delta = None
        assert pushed.loss is not None
        total = clean.loss + options.perturbed_weight * pushed.loss
        metrics = dict(clean.metrics)
        metrics["perturbed_loss"] = pushed.loss.detach()
        if options.robust_targets > 0:
            assert clean.logits is not None and pushed.logits is not None
            kl = _kl(clean.logits.detach(), pushed.logits)
            total = total + options.robust_targets * kl
            metrics["robust_kl"] = kl.detach()
        if pull:
            distance = self._pull_distance(clean_maps, pushed_maps, batch.get("attention_mask"))
            total = total + options.attention_pull * distance
            metrics["attention_pull"] = distance.detach()
        return ModelOutput(total, clean.logits, clean.hidden_states, metrics, clean.target_logits)

    def _run(self, batch: dict[str, Any], maps: bool) -> tuple[ModelOutput, list[torch.Tensor]]:
        if not maps:
            return self.model(**batch), []
        with record_attention(self.model.encoder) as recorded:
            out = self.model(**batch)
        return out, list(recorded)

    # -- perturbations -----------------------------------------------------------------------

    def _gradient(self, loss: torch.Tensor) -> torch.Tensor:
        """∂loss/∂(word-embedding output) ``[b, s, h]``, keeping the graph for the backward."""
        assert self._word is not None
        (grad,) = torch.autograd.grad(loss, self._word, retain_graph=True)
        return grad.float()

    def _perturbation(self, batch: dict[str, Any], loss: torch.Tensor) -> torch.Tensor:
        options, ids = self.options, batch["input_ids"]
        mask = batch.get("attention_mask")
        real = (mask if mask is not None else torch.ones_like(ids)).unsqueeze(-1).float()
        if options.embedding_push == "gradient":
            grad = self._gradient(loss) * real
            norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None]
            return options.epsilon * grad / norm  # each example moved by epsilon
        if options.embedding_push == "centroid":
            return self._toward_centroids(ids, real)
        table = self._table_gradient(ids, self._gradient(loss))
        step = options.epsilon if options.adversarial == "fgm" else options.pgd_alpha
        moved = step * table / table.norm().clamp(min=1e-12)
        if options.adversarial == "pgd":
            for _ in range(options.pgd_steps - 1):
                self._delta = moved[ids]
                try:
                    probe = self.model(**batch).loss
                finally:
                    self._delta = None
                assert probe is not None
                grad = self._table_gradient(ids, self._gradient(probe))
                moved = moved + options.pgd_alpha * grad / grad.norm().clamp(min=1e-12)
                norm = moved.norm()
                if norm > options.epsilon:  # back into the epsilon ball
                    moved = moved * (options.epsilon / norm)
        return moved[ids].detach() * real

    def _table_gradient(self, ids: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The word table's gradient ``[vocab, h]`` (token rows summed), as FGM on the table."""
        table = torch.zeros(self.model.config.vocab_size, grad.shape[-1], device=grad.device)
        return table.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))

    def _toward_centroids(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Each example shifted by ``epsilon`` toward a randomly drawn other language's centroid
        (the direction from the English centroid), spread evenly over its real tokens."""
        counts = cast(torch.Tensor, self.centroid_counts)
        table = cast(torch.Tensor, self.model.embedding.word_weight).detach().float()
        centroids = (counts @ table) / counts.sum(1, keepdim=True)  # [L, h]
        directions = F.normalize(centroids[1:] - centroids[:1], dim=-1)  # [L-1, h]
        chosen = torch.randint(len(directions), (ids.shape[0],), device=ids.device)
        tokens = real.sum(1, keepdim=True).clamp(min=1)  # [b, 1, 1]
        return self.options.epsilon * directions[chosen][:, None, :] * real / tokens.sqrt()

    def _pull_distance(
        self, clean: list[torch.Tensor], pushed: list[torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        total = torch.zeros((), device=pushed[0].device)
        for i in self._pull:
            p, q = clean[i].detach(), pushed[i]  # [b, heads, s, s]
            if self.options.pull_loss == "mse":
                rows = (q - p).pow(2).sum(-1)
            else:
                tiny = torch.finfo(q.dtype).tiny
                rows = (p * (p.clamp(min=tiny).log() - q.clamp(min=tiny).log())).sum(-1)
            rows = rows.mean(1)  # [b, s]
            if mask is None:
                total = total + rows.mean()
            else:
                weights = mask.to(rows.dtype)
                total = total + (rows * weights).sum() / weights.sum().clamp(min=1)
        return total / len(self._pull)


def _kl(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) ‖ softmax(perturbed)), mean over rows (and positions)."""
    log_p = F.log_softmax(clean_logits.float(), dim=-1)
    log_q = F.log_softmax(logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
