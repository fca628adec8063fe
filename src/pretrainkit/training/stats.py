"""What one optimizer step produced, and the window of steps summed into one metrics record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


def count_tokens(batch: dict[str, Any]) -> int:
    """Real (non-padding) tokens in a batch: the sum of ``attention_mask``, else all input ids."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, Tensor) else 0


@dataclass
class StepResult:
    """One optimizer step. ``loss`` is None when the step was skipped as non-finite."""

    loss: float | None
    grad_norm: float
    lr: float
    tokens: int
    seconds: float
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Window:
    """Sums over the steps since the last metrics record."""

    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    metrics: dict[str, Tensor] = field(default_factory=dict)

    def add(self, result: StepResult) -> None:
        """Count one step; skipped steps add time and tokens but no loss or metrics."""
        self.tokens += result.tokens
        self.seconds += result.seconds
        if result.loss is None:
            return
        self.losses.append(result.loss)
        self.grad_norms.append(result.grad_norm)
        for name, value in result.metrics.items():
            # Kept as tensors: summing on the device avoids a host sync per step.
            self.metrics[name] = self.metrics[name] + value if name in self.metrics else value

    def record(self, step: int, lr: float, elapsed: float, skipped: int) -> dict[str, Any]:
        """The metrics record for this window (means over its non-skipped steps)."""

        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        record: dict[str, Any] = {
            "step": step,
            "loss": mean(self.losses),
            "lr": lr,
            "grad_norm": mean(self.grad_norms),
            "tokens_per_s": self.tokens / self.seconds if self.seconds > 0 else 0.0,
            "elapsed": elapsed,
            "skipped_steps": skipped,
        }
        count = max(1, len(self.losses))
        record.update({name: float(total) / count for name, total in self.metrics.items()})
        return record
