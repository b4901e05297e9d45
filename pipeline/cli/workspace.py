"""drmnet commands about the workspace: what is where, and which renderer variant is active."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.app import app

# The outputs of `dvc repro` (dvc.yaml) and of the embedded MLflow store, as a user looks for them.
WORKSPACE_ITEMS = (
    ("report (HTML)", "reports/report.html"),
    ("report (Markdown)", "reports/report.md"),
    ("evaluation metrics", "eval/metrics.json"),
    ("environment maps", "data/envmaps"),
    ("dataset shards", "data/shards"),
    ("model checkpoints", "checkpoints"),
    ("MLflow database", "mlflow.db"),
    ("MLflow artifacts", "mlartifacts"),
)


@app.command("where")
def where() -> None:
    """Print where the pipeline's outputs, the MLflow database and the registered models are."""
    for label, relative in WORKSPACE_ITEMS:
        path = Path(relative)
        state = "" if path.exists() else "  (not yet produced)"
        print(f"{label:<20} {path.resolve()}{state}")
    for line in _registered_models():
        print(f"{'registered model':<20} {line}")
    print(f"{'MLflow UI':<20} {mlflow_ui_line()}")


def mlflow_ui_line() -> str:
    """Where a user sees the tracked runs and registered models: the tracking server itself when
    ``MLFLOW_TRACKING_URI`` names one, else the embedded store through `make ui` (its ``PORT``)."""
    from pipeline.registry import tracking_uri

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/models"
    return "`make ui`, then http://127.0.0.1:5000/#/models (`make ui PORT=N`: port N instead)"


def _registered_models() -> list[str]:
    """``name vN (aliases)`` for every registered model version in the tracking store."""
    import os

    if not Path("mlflow.db").exists() and not os.environ.get("MLFLOW_TRACKING_URI"):
        return []
    from mlflow import MlflowClient

    from pipeline.registry import tracking_uri

    client = MlflowClient(tracking_uri())
    lines = []
    for model in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(f"name = '{model.name}'"):
            tags = ", ".join(sorted(aliases.get(str(version.version), [])))
            lines.append(f"models:/{model.name}/{version.version}" + (f"  @{tags}" if tags else ""))
    return lines


@app.command("info")
def info() -> None:
    """Print the Mitsuba variant that would be used and the libLLVM found for it."""
    from rendering.variant import find_libllvm, resolve_variant

    print(f"libLLVM: {find_libllvm() or 'not found'}")
    print(f"Mitsuba variant: {resolve_variant()}")


@app.command("serve")
def serve(
    flows: list[str] = typer.Argument(None, help="Flow names to serve (default: all). See `drmnet flows`."),
    limit: int = typer.Option(None, help="At most this many runs at once."),
    root: Path = typer.Option(
        None,
        help="Where served runs write, in the workspace's layout (default: served/). They read params.yaml "
        "and data/ through links; `--root .` writes into the workspace, as `dvc repro` does.",
    ),
) -> None:
    """Serve a Prefect deployment (`<flow>/default`) of every drmnet flow; needs PREFECT_API_URL."""
    import os

    from pipeline.cli.checks import check_range

    check_range("--limit", limit, 1)
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "warning: PREFECT_API_URL is not set, so deployments go to Prefect's ephemeral API, which no "
            "`prefect deployment run` can reach. Start a server (`prefect server start --host 127.0.0.1`) "
            "and export PREFECT_API_URL=http://127.0.0.1:4200/api first."
        )
    from pipeline.deployments import serve as serve_deployments

    serve_deployments(flows or None, limit, root)


@app.command("flows")
def flows() -> None:
    """List the Prefect flows that `drmnet serve` deploys."""
    from pipeline.deployments import DEPLOYMENT_NAME, FLOWS

    for name, target in FLOWS.items():
        print(f"{name + '/' + DEPLOYMENT_NAME:<30} {target}")
