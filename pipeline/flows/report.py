"""The ``report`` Prefect flow: what ``evaluate`` wrote → ``reports/report.html`` + ``report.md``
(:func:`pipeline.report.build_report`; the flow exists so that a served deployment can run it)."""

from __future__ import annotations

from prefect import flow

from pipeline.report import build_report


@flow(name="report", persist_result=False)
def report(
    params_path: str = "params.yaml", eval_dir: str | None = None, out_dir: str | None = None
) -> list[str]:
    """Build the evaluation report; directories default to params.yaml's ``report`` section."""
    from pipeline.config import load_params

    section = load_params(params_path).get("report") or {}
    paths = build_report(
        eval_dir or section.get("eval_dir", "eval"), out_dir or section.get("out_dir", "reports")
    )
    return [str(p) for p in paths]
