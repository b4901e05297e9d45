"""drmnet commands about the workspace: what is where, and which renderer variant is active."""

from __future__ import annotations

from pathlib import Path

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
    print("registered models    `make ui`, then http://127.0.0.1:5000/#/models")


@app.command("info")
def info() -> None:
    """Print the Mitsuba variant that would be used and the libLLVM found for it."""
    from rendering.variant import find_libllvm, resolve_variant

    print(f"libLLVM: {find_libllvm() or 'not found'}")
    print(f"Mitsuba variant: {resolve_variant()}")
