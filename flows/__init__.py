"""Prefect flows: the application layer that composes the library as tasks.

``flows.sweep``: ``archive_sweep`` (the nightly watch-list sweep) and ``reprocess_region``;
``flows.train``: ``train_models``; ``flows.common``: task-runner choice and the per-worker
inference concurrency guard. The library (``astro_pipeline``) never imports this package.
"""
