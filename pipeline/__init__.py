"""Prefect flows, WebDataset shards, training loops, evaluation, reports and the ``drmnet`` CLI."""
