"""Downstream tasks: data formats, streams and batches (classification), and metrics."""
