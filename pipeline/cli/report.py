"""drmnet report: the evaluation (and the training curves) as HTML and Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import check_out_dir
from pipeline.cli.params import optional_section


@app.command("report")
def report(
    eval_dir: Annotated[
        Path | None, typer.Option("--eval", help="What `evaluate` wrote (report.eval_dir).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: report.out_dir).")] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Training curves train_<net>.csv (default: report.plots_dir).")
    ] = None,
    params: Annotated[Path | None, typer.Option(help="params.yaml with the report section.")] = None,
) -> None:
    """Write reports/report.html (self-contained) and reports/report.md from an evaluation and
    the training curves."""
    from pipeline.report import build_report

    section = optional_section("report", params)
    eval_dir = eval_dir or Path(section.get("eval_dir", "eval"))
    out = out or Path(section.get("out_dir", "reports"))
    plots = plots or Path(section.get("plots_dir", "plots"))
    check_out_dir(out)
    html_path, md_path = build_report(eval_dir, out, plots)
    print(f"{html_path}\n{md_path}")
