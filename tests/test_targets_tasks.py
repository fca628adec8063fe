"""The per-token targets: token_classification (tagging) and span_extraction (QA)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pretrainkit
from pretrainkit.errors import ConfigError
from pretrainkit.targets import TARGETS

SMALL = {
    "vocab_size": 64,
    "hidden_size": 32,
    "encoder.num_heads": 2,
    "encoder.num_layers": 2,
    "embedding.max_positions": 16,
}
TAGS = ["even", "odd"]


def tiny(targets: list[dict]) -> pretrainkit.Model:
    torch.manual_seed(0)
    return pretrainkit.build_model("bert-tiny", {**SMALL, "targets": targets})


def test_token_classification_loss_ignores_padding_and_sub_tokens():
    torch.manual_seed(1)
    target = TARGETS.get("token_classification")(hidden_size=8, labels=["O", "B", "I"]).eval()
    hidden = torch.randn(2, 5, 8)
    labels = torch.tensor([[-100, 0, 1, -100, 2], [-100, 2, -100, -100, -100]])
    out = target(hidden, torch.ones(2, 5), labels)
    logits = hidden @ target.classifier.weight.T + target.classifier.bias
    kept = labels != -100
    expected = F.cross_entropy(logits[kept], labels[kept])
    assert out.logits.shape == (2, 5, 3)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    correct = (logits[kept].argmax(-1) == labels[kept]).float().mean()
    assert out.metrics["token_accuracy"].item() == pytest.approx(correct.item())
    assert target(hidden, None, None).loss is None


def test_span_extraction_masks_padding_and_averages_start_and_end():
    torch.manual_seed(2)
    target = TARGETS.get("span_extraction")(hidden_size=8)
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3])
    spans = torch.tensor([[1, 4], [2, 3], [-100, 2]])  # row 2: start ignored
    out = target(hidden, mask, spans)
    assert out.logits.shape == (3, 6, 2)
    assert (out.logits[mask == 0] == torch.finfo(torch.float32).min).all()
    raw = target.output(hidden).masked_fill((mask == 0)[..., None], torch.finfo(torch.float32).min)
    start = F.cross_entropy(raw[:2, :, 0], spans[:2, 0])
    end = F.cross_entropy(raw[:, :, 1], spans[:, 1])
    assert out.loss is not None
    assert out.loss.item() == pytest.approx(((start + end) / 2).item(), abs=1e-6)
    assert out.metrics["start_loss"].item() == pytest.approx(start.item(), abs=1e-6)
    assert out.metrics["end_loss"].item() == pytest.approx(end.item(), abs=1e-6)
    start_hits = (raw[:2, :, 0].argmax(-1) == spans[:2, 0]).float().mean()
    end_hits = (raw[:, :, 1].argmax(-1) == spans[:, 1]).float().mean()
    assert out.metrics["start_accuracy"].item() == pytest.approx(start_hits.item())
    assert out.metrics["end_accuracy"].item() == pytest.approx(end_hits.item())
    # Logits that point at the gold positions score 1.0 on both (row 2's start is ignored).
    perfect = torch.zeros(3, 6, 8)
    perfect[torch.arange(3), spans[:, 0].clamp(min=0), 0] = 10.0
    perfect[torch.arange(3), spans[:, 1], 1] = 10.0
    target.output.weight.data = torch.eye(2, 8)
    target.output.bias.data.zero_()
    ideal = target(perfect, mask, spans).metrics
    assert (ideal["start_accuracy"].item(), ideal["end_accuracy"].item()) == (1.0, 1.0)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="at least two labels"):
        tiny([{"name": "token_classification", "labels": ["O"]}])
    with pytest.raises(ConfigError, match="unknown option 'labels' for target 'span_extraction'"):
        tiny([{"name": "span_extraction", "labels": ["a", "b"]}])
    with pytest.raises(ConfigError, match="needs option"):
        tiny([{"name": "token_classification"}])


def test_labels_survive_save_and_load(tmp_path):
    model = tiny([{"name": "token_classification", "labels": ["O", "B-X", "I-X"]}])
    again = pretrainkit.load(model.save(tmp_path / "m"))
    assert again.targets["token_classification"].labels == ["O", "B-X", "I-X"]
    ids = torch.randint(0, 64, (2, 7))
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def _train(model: pretrainkit.Model, make_batch, steps: int = 50) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for step in range(steps):
        out = model(**make_batch(step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5


def test_tagging_learns_token_parity():
    model = tiny([{"name": "token_classification", "labels": TAGS, "dropout": 0.0}])

    def make_batch(step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(5, 64, (16, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[::3, 8:] = 0
        labels = (ids % 2).masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    first, last = _train(model, make_batch)
    assert last <= 0.7 * first, (first, last)


def test_span_extraction_learns_marker_position():
    model = tiny([{"name": "span_extraction"}])
    marker = 4

    def make_batch(step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(5, 64, (16, 12), generator=g)
        start = torch.randint(1, 9, (16,), generator=g)
        ids[torch.arange(16), start] = marker  # the answer starts at the marker, 3 tokens long
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "start_positions": start,
            "end_positions": start + 2,
        }

    first, last = _train(model, make_batch)
    assert last <= 0.7 * first, (first, last)
