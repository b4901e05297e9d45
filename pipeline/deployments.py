"""Prefect deployments of every drmnet flow, served by ``drmnet serve``.

Each flow gets one deployment named ``default`` whose parameters are the flow's own defaults
(read from params.yaml at run time), overridable per run:

    prefect server start --host 127.0.0.1            # once, sqlite under PREFECT_HOME
    PREFECT_API_URL=http://127.0.0.1:4200/api drmnet serve
    PREFECT_API_URL=http://127.0.0.1:4200/api \
        prefect deployment run 'render-dataset/default' --param dataset=drmnet --param split=train --watch

Served runs have an output root of their own, ``served/`` by default (``drmnet serve --root``), so
that they never write ``dvc repro``'s outputs and ``dvc status`` stays as it was. The root has the
workspace's layout: runs write ``data/envmaps``, ``data/shards``, ``checkpoints``, ``metrics``,
``plots``, ``eval``, ``reports``, ``mlflow.db`` and ``mlartifacts`` there (a registry of their own,
unless ``MLFLOW_TRACKING_URI`` names a server). They read the workspace's params.yaml and
everything else under its ``data/`` (your files in ``data/user``, the caches), which the root holds
as symbolic links. ``--root .`` serves in the workspace itself, writing what ``dvc repro`` writes.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from rendering.errors import InputError

DEPLOYMENT_NAME = "default"
SERVED_ROOT = Path("served")  # served runs' output root, relative to the workspace

# The pipeline's outputs under data/ (dvc.yaml): never linked into a served root.
DATA_OUTPUTS = ("envmaps", "shards")

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


def prepare_served_root(root: str | os.PathLike, workspace: str | os.PathLike = ".") -> Path:
    """Make ``root`` a workspace for served runs: links to ``workspace``'s params.yaml and to each
    entry of its ``data/`` that is not an output (see the module docstring). Links are made again
    on every call, so that an entry added to ``data/`` later is seen; what the root holds of its own
    (not a link) stays. Returns the root, absolute."""
    workspace = Path(workspace).resolve()
    root = Path(root).resolve()
    if not (workspace / "params.yaml").is_file():
        raise InputError(
            workspace / "params.yaml", "does not exist: serve from the workspace (repository root)"
        )
    inputs = [Path("params.yaml")]
    if (workspace / "data").is_dir():
        entries = sorted((workspace / "data").iterdir())
        inputs += [Path("data", entry.name) for entry in entries if entry.name not in DATA_OUTPUTS]
    for relative in inputs:
        target = workspace / relative
        link = root / relative
        if target == root or target in root.parents:  # a root inside data/: no link to itself
            continue
        if link.is_symlink():
            if Path(os.readlink(link)) == target:
                continue
            link.unlink()
        elif link.exists():
            continue  # the root's own, e.g. a cache its runs made before the workspace had one
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=target.is_dir())
    return root


def serve(
    names: list[str] | None = None, limit: int | None = None, root: str | os.PathLike | None = None
) -> None:
    """Serve the deployments until interrupted (needs PREFECT_API_URL pointing at a server); their
    runs work in ``root`` (default ``served/``; the workspace itself when ``root`` is it)."""
    from prefect import serve as prefect_serve

    root = Path(SERVED_ROOT if root is None else root)
    if root.resolve() != Path.cwd().resolve():
        if os.environ.get("DRMNET_PARAMS"):  # a relative path names the workspace's file
            os.environ["DRMNET_PARAMS"] = str(Path(os.environ["DRMNET_PARAMS"]).resolve())
        os.chdir(prepare_served_root(root))
        print(f"served runs write under {root.resolve()}")
    prefect_serve(*build_deployments(names), limit=limit)
