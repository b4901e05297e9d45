"""Prefect flows ``train-drmnet`` and ``train-obsnet``: thin flows over
:func:`pipeline.training.stage.run_training`, so a served deployment trains exactly as
``drmnet train`` and ``dvc repro`` do (same params.yaml, checkpoints, MLflow registration)."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow


def _train(
    net: str,
    params_path: str | None,
    profile: str | None,
    resume: bool | Literal["auto"],
    data_dir: str | None,
):
    from pipeline.config import load_params
    from pipeline.locks import output_lock
    from pipeline.training.stage import CHECKPOINTS, run_training

    with output_lock(CHECKPOINTS / net, f"the Prefect flow train-{net}"):
        metrics = run_training(net, load_params(params_path), profile, resume, data_dir)
    return {key: value for key, value in metrics.items() if isinstance(value, int | float | str)}


@flow(name="train-drmnet", persist_result=False)
def train_drmnet_flow(
    params_path: str | None = None,  # params.yaml (default: DRMNET_PARAMS or ./params.yaml)
    profile: str | None = None,  # params profile (default: params.yaml's `profile`)
    # "auto": continue an unfinished checkpoints/drmnet/ of the same settings and data, else start
    # fresh (so a retried flow run resumes); true: continue or fail naming what differs; false: fresh
    resume: bool | Literal["auto"] = "auto",
    data_dir: str | None = None,  # shards split directory (default: data/shards/drmnet/train)
) -> dict[str, Any]:
    """Train IllNet + RefNet and register the `drmnet` model version (alias `candidate`)."""
    return _train("drmnet", params_path, profile, resume, data_dir)


@flow(name="train-obsnet", persist_result=False)
def train_obsnet_flow(
    params_path: str | None = None,  # params.yaml (default: DRMNET_PARAMS or ./params.yaml)
    profile: str | None = None,  # params profile (default: params.yaml's `profile`)
    # "auto": continue an unfinished checkpoints/obsnet/ of the same settings and data, else start
    # fresh (so a retried flow run resumes); true: continue or fail naming what differs; false: fresh
    resume: bool | Literal["auto"] = "auto",
    data_dir: str | None = None,  # shards split directory (default: data/shards/obsnet/train)
) -> dict[str, Any]:
    """Train ObsNet and register the `obsnet` model version (alias `candidate`)."""
    return _train("obsnet", params_path, profile, resume, data_dir)
