"""Parameter-efficient continual learning: parameter groups chosen per task within a budget,
EWC / L2-SP toward the old values, and checkpoints as hash-chained deltas
(``pretrainkit continual``; the workflow is ``pretrainkit.workflows.continual``)."""
