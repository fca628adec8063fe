"""Token-level pre-training targets: masked LM and causal LM."""

from __future__ import annotations

from torch import nn

from pretrainkit.layers.norms import make_activation, make_norm
from pretrainkit.targets.base import TARGETS, Target, TargetOutput
from pretrainkit.targets.vocab_loss import vocab_cross_entropy


@TARGETS.register("mlm")
class MaskedLMTarget(Target):
    """BERT's MLM head: dense → activation → norm → decoder tied to the word embedding.

    Logits are computed only at masked positions during training, which is where the loss is;
    this saves most of the vocab-sized matmul.
    """

    tie_word_embedding = "decoder"

    def __init__(
        self,
        hidden_size: int,
        embedding_size: int,
        vocab_size: int,
        activation: str = "gelu",
        norm: str = "layernorm",
        norm_eps: float = 1e-12,
    ):
        super().__init__()
        self.dense = nn.Linear(hidden_size, embedding_size)
        self.act = make_activation(activation)
        self.norm = make_norm(norm, embedding_size, norm_eps)
        self.decoder = nn.Linear(embedding_size, vocab_size)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        if labels is not None:
            keep = labels != -100
            selected = hidden_states[keep]  # [n, h]
            logits = self.decoder(self.norm(self.act(self.dense(selected))))
            loss, correct = vocab_cross_entropy(logits, labels[keep])
            return TargetOutput(loss, logits, {"mlm_loss": loss.detach(), "mlm_accuracy": correct})
        logits = self.decoder(self.norm(self.act(self.dense(hidden_states))))
        return TargetOutput(None, logits)


@TARGETS.register("lm")
class CausalLMTarget(Target):
    """Next-token prediction; labels are the inputs (the shift happens here).

    Args:
        bias: a bias on the vocabulary projection (BART's and PEGASUS' ``final_logits_bias``).
        tied: the projection is the word embedding.
        scale: multiplies the hidden states before the projection (T5 v1.0 with tied
            embeddings uses ``hidden_size ** -0.5``).
    """

    shift = True  # position t predicts token t + 1 of the same sequence

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        bias: bool = False,
        tied: bool = True,
        scale: float = 1.0,
    ):
        super().__init__()
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=bias)
        # Only ties when the embedding width equals hidden; checked by the builder.
        self.tie_word_embedding = "decoder" if tied else None
        self.scale = scale

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        if self.scale != 1.0:
            hidden_states = hidden_states * self.scale
        logits = self.decoder(hidden_states)  # [b, s, v]
        if labels is None:
            return TargetOutput(None, logits)
        if self.shift:
            scored, gold = logits[:, :-1], labels[:, 1:]
        else:
            scored, gold = logits, labels
        scored = scored.reshape(-1, logits.shape[-1])
        gold = gold.reshape(-1)
        loss, correct = vocab_cross_entropy(scored, gold)
        return TargetOutput(loss, logits, {"lm_loss": loss.detach(), "lm_accuracy": correct})


@TARGETS.register("seq2seq_lm")
class Seq2SeqLMTarget(CausalLMTarget):
    """The decoder's language-model head: position t predicts label t (the decoder's inputs are
    the labels shifted right, built by ``Model.decoder_inputs``)."""

    shift = False
