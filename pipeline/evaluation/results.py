"""What an evaluation's rows become: the summary per group and method (means and medians), the
value that decides the champion, ``metrics.json`` and ``per_sample.csv``, and the settings as
plain data for provenance."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fileio.atomic import atomic_write_bytes
from pipeline.evaluation.methods import METHODS
from pipeline.evaluation.test_sets import KINDS
from pipeline.settings import EstimateSettings, EvaluateSettings

ID_COLUMNS = ("test_set", "key", "method", "envmap_id", "envmap_kind")  # the rows' non-metric columns
# Settings recorded under the name they had when the first evaluations were recorded, so that the
# records (and the fingerprints of provenance.json) of earlier evaluations stay comparable.
RECORDED_AS = {"sampling_steps": "ddim_steps"}


def summary_groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each summary group: every test set, then ``<test set>/<kind>`` per envmap
    kind among its rows (:data:`KINDS` order, then any other)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for test_set in dict.fromkeys(row["test_set"] for row in rows):
        selected = [r for r in rows if r["test_set"] == test_set]
        out[test_set] = selected
        present = dict.fromkeys(r.get("envmap_kind", "user") for r in selected)
        for kind in sorted(present, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k)):
            out[f"{test_set}/{kind}"] = [r for r in selected if r.get("envmap_kind", "user") == kind]
    return out


def group_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """{group: number of test samples} of :func:`summary_groups`."""
    return {name: len({r["key"] for r in selected}) for name, selected in summary_groups(rows).items()}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-sample rows → ``{group: {method: {metric: mean, <metric>_median: median}}}`` over
    the group's samples (groups of :func:`summary_groups`, methods in :data:`METHODS` order)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for group, selected_rows in summary_groups(rows).items():
        summary[group] = {}
        for method in METHODS:
            selected = [r for r in selected_rows if r["method"] == method]
            if not selected:
                continue
            values: dict[str, float] = {}
            for name in (k for k in selected[0] if k not in ID_COLUMNS):
                column = [r[name] for r in selected]
                values[name] = float(np.mean(column))
                values[f"{name}_median"] = float(np.median(column))
            summary[group][method] = values
    return summary


def primary_group(summary: dict[str, Any], settings: EvaluateSettings) -> str:
    """The group whose ``drmnet`` value decides the champion: ``primary_test_set`` when the
    summary has it (e.g. ``principled/real``), else its test set (``principled``), else the first."""
    wanted = settings.primary_test_set
    for group in (wanted, wanted.split("/", 1)[0]):
        if group in summary:
            return group
    return next(iter(summary))


def primary_value(summary: dict[str, Any], settings: EvaluateSettings) -> float:
    """The number that decides the champion: ``primary_metric`` of ``drmnet`` on the primary group."""
    return float(summary[primary_group(summary, settings)]["drmnet"][settings.primary_metric])


def per_sample_csv(rows: list[dict[str, Any]]) -> bytes:
    """The rows as CSV (one line per test sample and method; the DVC plots file)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue().encode()


def write_results(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``metrics.json`` (means) and ``per_sample.csv`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    summary = summarize(rows)
    return {
        "metrics": atomic_write_bytes(out / "metrics.json", (json.dumps(summary, indent=2) + "\n").encode()),
        "per_sample": atomic_write_bytes(out / "per_sample.csv", per_sample_csv(rows)),
    }


def settings_record(settings: EvaluateSettings, with_models: bool = True) -> dict[str, Any]:
    """The settings as plain JSON data (for provenance); ``with_models=False`` leaves out which
    models are evaluated, leaving what makes two evaluations' numbers comparable."""
    record: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(asdict(settings))).items():
        if key != "estimate":
            record[key] = value
            continue
        # The section's flat keys, in place; erode only when set (it was not an evaluate key before,
        # so records of earlier evaluations stay comparable).
        default_erode = EstimateSettings().erode
        record.update(
            {RECORDED_AS.get(k, k): v for k, v in value.items() if k != "erode" or v != default_erode}
        )
    if not with_models:
        record.pop("model")
        record.pop("obsnet")
    return record
