"""Prefect flow ``make-envmap-splits``: the train/val/test environment maps (procedural and/or a
user's directory), each envmap in exactly one split. A thin flow over
:func:`pipeline.splits.make_envmap_splits`, which resumes by keeping finished files."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger


@flow(name="make-envmap-splits", persist_result=False)
def make_envmap_splits(
    out_dir: str = "data/envmaps",  # writes <out_dir>/<split>/<id>.exr and the stats table
    params_path: str | None = None,  # params.yaml (default: DRMNET_PARAMS or ./params.yaml)
) -> dict[str, Any]:
    """Make (or complete) the envmap splits from params.yaml's `envmaps` and `envmaps_split`."""
    from pipeline.config import load_params
    from pipeline.splits import make_envmap_splits as write_splits

    logger = get_run_logger()

    def progress(done: int, total: int, envmap_id: str) -> None:
        logger.info("envmap %d/%d %s", done, total, envmap_id)

    written = write_splits(load_params(params_path), out_dir, progress)
    return {split: str(path) for split, path in written.items()}
