"""Prefect deployments of every drmnet flow, served by ``drmnet serve``.

Each flow gets one deployment named ``default`` whose parameters are the flow's own defaults
(read from params.yaml at run time), overridable per run:

    prefect server start --host 127.0.0.1            # once, sqlite under PREFECT_HOME
    PREFECT_API_URL=http://127.0.0.1:4200/api drmnet serve
    PREFECT_API_URL=http://127.0.0.1:4200/api \
        prefect deployment run 'render-dataset/default' --param dataset=drmnet --param split=train --watch

Work runs in the serving process (its working directory is the repository), so the same
params.yaml, data/ and mlflow.db as ``dvc repro`` are used.
"""

from __future__ import annotations

import importlib
from typing import Any

DEPLOYMENT_NAME = "default"

# Flow name → "module:function" of the @flow object. Imported lazily: serving one flow must not
# import the others' dependencies.
FLOWS: dict[str, str] = {
    "make-envmap-splits": "pipeline.flows.envmaps:make_envmap_splits",
    "render-dataset": "pipeline.flows.render_dataset:render_dataset",
    "train-drmnet": "pipeline.flows.train:train_drmnet_flow",
    "train-obsnet": "pipeline.flows.train:train_obsnet_flow",
    "evaluate": "pipeline.flows.evaluate:evaluate",
    "report": "pipeline.flows.report:report",
}

# Parameters without a default in the flow's signature get one here, so a bare
# `prefect deployment run NAME/default` does something useful.
DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "render-dataset": {"dataset": "drmnet", "split": "train"},
}


def load_flow(name: str):
    """The @flow object registered under ``name``."""
    if name not in FLOWS:
        raise KeyError(f"unknown flow {name!r}; known: {sorted(FLOWS)}")
    module_name, attribute = FLOWS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)


def build_deployments(names: list[str] | None = None) -> list[Any]:
    """One ``RunnerDeployment`` per flow (all flows when ``names`` is empty)."""
    deployments = []
    for name in names or list(FLOWS):
        flow = load_flow(name)
        deployments.append(
            flow.to_deployment(
                name=DEPLOYMENT_NAME,
                parameters=DEFAULT_PARAMETERS.get(name, {}),
                description=(flow.description or "").strip().splitlines()[0] if flow.description else None,
                tags=["drmnet"],
            )
        )
    return deployments


def serve(names: list[str] | None = None, limit: int | None = None) -> None:
    """Serve the deployments until interrupted (needs PREFECT_API_URL pointing at a server)."""
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(names), limit=limit)
