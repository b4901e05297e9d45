"""drmnet evaluate: a model version on the test sets, MLflow logging and the champion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import check_out_dir


@app.command("evaluate")
def evaluate(
    model: Annotated[
        str | None, typer.Option(help="DRMNet URI or directory (default: evaluate.model).")
    ] = None,
    obsnet: Annotated[
        str | None, typer.Option(help="ObsNet URI or directory (default: evaluate.obsnet).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output directory: metrics.json, per_sample.csv, gallery/.")
    ] = Path("eval"),
    params: Annotated[Path, typer.Option(help="params.yaml.")] = Path("params.yaml"),
    flow: Annotated[
        bool, typer.Option(help="Run as the Prefect flow `evaluate` (--no-flow: plain Python).")
    ] = True,
) -> None:
    """Evaluate a model version on the test sets (three-sphere protocol, envmap, material,
    re-render, stochasticity; baselines); log to MLflow and update the `champion` alias."""
    import json

    from pipeline.config import load_params

    check_out_dir(out)
    checked = load_params(params)  # a bad params file is one line, before Prefect is even imported
    from pipeline.flows.evaluate import evaluate as evaluate_flow
    from pipeline.flows.evaluate import run_evaluation

    if flow:
        summary = evaluate_flow(str(params), model, obsnet, str(out))
    else:
        summary = run_evaluation(checked, model, obsnet, out)
    for test_set, methods in summary.items():
        values = ", ".join(f"{m} {v['mirror_si_rmse']:.4g}" for m, v in methods.items())
        print(f"{test_set}: mirror si-RMSE {values}")
    champion = out / "champion.json"
    if champion.exists():
        print(json.loads(champion.read_text())["decision"])
