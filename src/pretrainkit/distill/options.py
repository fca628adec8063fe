"""The options of distillation, free of torch so that the command line's parser can read them:
how the student is made (``StudentOptions``) and each recipe's options (``RECIPE_OPTIONS``,
whose names ``pretrainkit.distill.recipes.RECIPES`` registers)."""

from __future__ import annotations

from dataclasses import dataclass

from pretrainkit.config.typed import check_choice, check_range

SELECTIONS = ("bottom", "uniform")


@dataclass
class StudentOptions:
    """How the student is made from the ``--student`` folder or preset."""

    student_layers: int | None = None
    """Layers of the student, taken from the student folder's (default: all of them)."""

    layer_selection: str = "bottom"
    """Which of the folder's layers the student keeps: bottom (the first K) | uniform (spread
    evenly, the last one included: every other layer when K is half)."""

    layer_groups: int | None = None
    """Parameter recurrence: this many distinct blocks, each applied student_layers /
    layer_groups times in a row, initialised from evenly spaced chosen layers."""

    factorized_size: int | None = None
    """A bottleneck word embedding of this width, mapped up to the hidden size (ALBERT's
    factorisation), initialised from the folder's tables by SVD when the vocabulary is kept."""

    student_tokenizer: str | None = None
    """A new vocabulary for the student (folder, vocab.txt, .model): its word table starts
    random, every other tensor comes from the student folder."""

    freeze_word_embeddings: bool = False
    """Keep the student's word table as initialised (LightMBERT freezes the teacher's)."""

    def __post_init__(self) -> None:
        check_choice(self.layer_selection, SELECTIONS, "layer_selection")
        if self.student_layers is not None:
            check_range(self.student_layers, "student_layers", 1)
        if self.layer_groups is not None:
            check_range(self.layer_groups, "layer_groups", 1)
        if self.factorized_size is not None:
            check_range(self.factorized_size, "factorized_size", 1)


@dataclass
class LayerLossOptions:
    """Weights and settings of the position-by-position losses (teacher and student share the
    tokenizer)."""

    hard_weight: float = 1.0
    """Weight of the student's own loss on the batch's labels (gold labels; MLM targets)."""

    soft_weight: float = 1.0
    """Weight of KL(teacher ‖ student) of the heads' softened outputs, times T²."""

    temperature: float = 2.0
    """Softmax temperature of the soft labels (task, layerwise) or of InfoNCE (sentence)."""

    hidden_weight: float = 1.0
    """Weight of the hidden-state MSE over the layer map (projected when widths differ)."""

    embedding_weight: float = 0.0
    """Weight of the embedding-output MSE (layer 0 of both models)."""

    attention_weight: float = 0.0
    """Weight of the attention-map loss over the layer map."""

    attention_loss: str = "kl"
    """kl (MiniLM) | mse (TinyBERT): how attention maps are compared."""

    attention_heads: str = "each"
    """each (head counts must match) | mean (maps averaged over heads)."""

    layer_map: str = "auto"
    """student:teacher layer pairs, e.g. 1:2,2:4 (0 = embedding output); auto = student layer
    i from teacher layer round(i·T/S)."""

    def __post_init__(self) -> None:
        for name in (
            "hard_weight",
            "soft_weight",
            "hidden_weight",
            "embedding_weight",
            "attention_weight",
        ):
            check_range(getattr(self, name), name, 0.0)
        check_range(self.temperature, "temperature", 1e-4, 100.0)
        check_choice(self.attention_loss, ("kl", "mse"), "attention_loss")
        check_choice(self.attention_heads, ("each", "mean"), "attention_heads")


@dataclass
class TaskDistillOptions(LayerLossOptions):
    """Task distillation: the layer losses, and a transfer set of teacher-labelled crops."""

    crops: int = 0
    """Extra training inputs per row, labelled by the teacher alone: random contiguous spans of
    the row's words (at least half of them), like the phrases of SST (TinyBERT's augmentation,
    DistilBERT's transfer set); the gold-label loss skips them. Single-text classification."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self.crops, "crops", 0, 64)


@dataclass
class LayerwiseOptions(LayerLossOptions):
    """LightMBERT / TinyBERT general distillation: layers and attention, no labels needed."""

    hard_weight: float = 0.0
    soft_weight: float = 0.0
    temperature: float = 1.0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0


@dataclass
class SentenceOptions:
    """Sentence-embedding distillation on parallel sentences (multi-stage: run it twice)."""

    mse_weight: float = 1.0
    """Weight of the MSE of the student's vectors (source and translation) to the teacher's
    vector of the source (the align stage)."""

    infonce_weight: float = 0.0
    """Weight of InfoNCE between the student's vectors and the teacher's vectors of the batch,
    in-batch negatives (the contrastive stage)."""

    temperature: float = 0.05
    """InfoNCE softmax temperature of the cosine similarities."""

    seq_length: int = 128
    """Longest sentence in tokens, special tokens included."""

    def __post_init__(self) -> None:
        check_range(self.mse_weight, "mse_weight", 0.0)
        check_range(self.infonce_weight, "infonce_weight", 0.0)
        check_range(self.temperature, "temperature", 1e-4, 100.0)
        check_range(self.seq_length, "seq_length", 8)


# Recipe name → its options (the recipes themselves: ``pretrainkit.distill.recipes``).
RECIPE_OPTIONS: dict[str, type] = {
    "task": TaskDistillOptions,
    "layerwise": LayerwiseOptions,
    "sentence": SentenceOptions,
}
