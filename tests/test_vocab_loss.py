"""The fused vocabulary cross-entropy (targets/vocab_loss.py) against PyTorch's own ops:
loss, accuracy and gradient, in fp32 and bf16, with ignored rows, ties, blocks that do not
divide the rows, and no kept row at all."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrainkit.targets import vocab_loss
from pretrainkit.targets.vocab_loss import vocab_cross_entropy


def reference(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = labels != -100
    loss = F.cross_entropy(logits.float(), labels)
    gold = logits.float().gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    correct = ((gold >= logits.float().amax(-1)) & keep).sum() / keep.sum()
    return loss, correct


@pytest.fixture(params=[None, 7], ids=["one block", "blocks of 7 rows"])
def blocks(request, monkeypatch) -> None:
    if request.param is not None:
        monkeypatch.setattr(vocab_loss, "_block_rows", lambda logits: request.param)


def batch(dtype: torch.dtype, rows: int = 61, vocab: int = 997):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(dtype)
    labels = torch.randint(0, vocab, (rows,), generator=g)
    labels[::5] = -100
    labels[1] = int(logits[1].float().argmax())  # at least one correct row
    return logits, labels


@pytest.mark.usefixtures("blocks")
def test_fp32_loss_accuracy_and_gradient_match_pytorch() -> None:
    logits, labels = batch(torch.float32)
    ours = logits.clone().requires_grad_()
    theirs = logits.clone().requires_grad_()
    loss, correct = vocab_cross_entropy(ours, labels)
    expected_loss, expected_correct = reference(theirs, labels)
    torch.testing.assert_close(loss, expected_loss)
    assert correct.item() == pytest.approx(expected_correct.item())
    assert correct.item() > 0
    (loss * 3).backward()
    (expected_loss * 3).backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    assert ours.grad[::5].abs().max().item() == 0.0  # ignored rows get no gradient


@pytest.mark.usefixtures("blocks")
def test_bf16_logits_computed_in_fp32_gradient_in_bf16() -> None:
    logits, labels = batch(torch.bfloat16)
    ours = logits.clone().requires_grad_()
    loss, _ = vocab_cross_entropy(ours, labels)
    exact = logits.float().requires_grad_()
    expected, _ = reference(exact, labels)
    assert loss.dtype == torch.float32
    # The inputs are the same bf16 values, so fp32 arithmetic gives the fp32 answer.
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    expected.backward()
    assert ours.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours.grad.float(), exact.grad, rtol=1e-2, atol=1e-4)


def test_ties_with_the_maximum_count_as_correct() -> None:
    logits = torch.tensor([[0.0, 2.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    _, correct = vocab_cross_entropy(logits, torch.tensor([2, 1, -100]))
    assert correct.item() == 0.5


def test_no_kept_row_gives_zero_loss_that_still_backpropagates() -> None:
    logits = torch.randn(4, 11, requires_grad=True)
    loss, correct = vocab_cross_entropy(logits, torch.full((4,), -100))
    assert loss.item() == 0.0 and correct.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().max().item() == 0.0
    empty = torch.randn(0, 11, requires_grad=True)
    loss, _ = vocab_cross_entropy(empty, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0


def test_inside_autocast_the_loss_is_not_recast() -> None:
    logits, labels = batch(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = vocab_cross_entropy(logits, labels)
    torch.testing.assert_close(loss, reference(logits, labels)[0])
