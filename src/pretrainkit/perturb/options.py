"""Options of training on perturbed inputs (issue 15), free of torch for the command line.

- ``adversarial fgm|pgd``: TencentPretrain's adversarial training. The word-embedding table is
  moved along its loss gradient (FGM: one step of norm ``epsilon``; PGD: ``pgd_steps`` steps of
  ``pgd_alpha``, projected back into the ``epsilon`` ball), and the example is trained again on
  the moved table.
- ``embedding_push gradient|centroid`` (Embedding-Push): every example's word embeddings are
  pushed by ``epsilon`` (L2 over the example), along its own loss gradient or toward the
  centroid of another language's word embeddings (from unlabelled text, ``centroid_text``), so
  the model trains on "virtual multilingual" inputs.
- ``attention_pull W`` (Attention-Pull): the perturbed input's attention maps stay close to the
  clean input's (MSE or KL over ``pull_layers``).
- ``robust_targets W`` (Robust targets): the perturbed input's prediction is trained toward the
  clean input's (KL), besides the gold label.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrainkit.config.typed import check_choice, check_range
from pretrainkit.errors import ConfigError


@dataclass
class PerturbOptions:
    adversarial: str = "none"
    """none | fgm | pgd: adversarial training on the word-embedding table (TencentPretrain)."""

    embedding_push: str = "none"
    """none | gradient | centroid: Embedding-Push, a per-example shift of the word embeddings
    along the loss gradient or toward another language's centroid (--centroid-text)."""

    epsilon: float = 1.0
    """Norm bound of the perturbation (L2: over the table for fgm/pgd, over each example's
    word embeddings for embedding-push)."""

    pgd_steps: int = 3
    """PGD: ascent steps."""

    pgd_alpha: float = 0.3
    """PGD: the norm of each ascent step."""

    perturbed_weight: float = 1.0
    """Weight of the gold-label loss on the perturbed input."""

    attention_pull: float = 0.0
    """Attention-Pull weight: the perturbed input's attention maps toward the clean input's."""

    pull_loss: str = "mse"
    """mse | kl: how Attention-Pull compares the maps."""

    pull_layers: str = "all"
    """Layers Attention-Pull compares: all, or 1-based indexes such as 1,2."""

    robust_targets: float = 0.0
    """Robust-targets weight: KL(clean prediction ‖ perturbed prediction)."""

    centroid_text: str | None = None
    """Unlabelled text for embedding-push centroid: a TSV of language<TAB>sentence lines with
    English (en) and at least one other language."""

    @property
    def active(self) -> bool:
        return self.adversarial != "none" or self.embedding_push != "none"

    def __post_init__(self) -> None:
        check_choice(self.adversarial, ("none", "fgm", "pgd"), "adversarial")
        check_choice(self.embedding_push, ("none", "gradient", "centroid"), "embedding_push")
        check_choice(self.pull_loss, ("mse", "kl"), "pull_loss")
        if self.epsilon <= 0:
            raise ConfigError(
                f"epsilon: the perturbation bound must be positive, got {self.epsilon}"
            )
        check_range(self.pgd_steps, "pgd_steps", 1, 50)
        check_range(self.pgd_alpha, "pgd_alpha", 1e-8)
        for name in ("perturbed_weight", "attention_pull", "robust_targets"):
            check_range(getattr(self, name), name, 0.0)
        if self.adversarial != "none" and self.embedding_push != "none":
            raise ConfigError(
                "adversarial and embedding_push both perturb the input: choose one "
                "(embedding_push gradient is a per-example FGM)"
            )
        if not self.active and (self.attention_pull or self.robust_targets):
            raise ConfigError(
                "attention_pull and robust_targets compare a perturbed input with the clean one: "
                "set embedding_push (or adversarial)"
            )
        if (self.embedding_push == "centroid") != (self.centroid_text is not None):
            raise ConfigError(
                "embedding_push centroid needs --centroid-text (language<TAB>sentence lines), "
                "and --centroid-text is only used by it"
            )
        if self.pull_layers != "all":
            parts = [p.strip() for p in self.pull_layers.split(",")]
            if not parts or not all(p.isdigit() and int(p) >= 1 for p in parts):
                raise ConfigError(
                    f"pull_layers: expected all or 1-based layer numbers like 1,2, "
                    f"got {self.pull_layers!r}"
                )
