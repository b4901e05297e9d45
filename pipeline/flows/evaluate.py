"""The ``evaluate`` Prefect flow: a model version → metrics on the test sets, the report's gallery,
MLflow logging and the ``champion`` alias.

Steps (:func:`run_evaluation`, plain Python; the flow only runs the per-test-set step as a
Prefect task):

1. load the estimator (``models:/drmnet@champion``-style URIs or checkpoint directories) and
   the test sets (:func:`pipeline.evaluation.test_sets.load_test_sets`);
2. per test set, evaluate every sample (the first ``gallery`` of them also write their images);
3. write ``metrics.json``, ``per_sample.csv`` and ``provenance.json`` (git commit, model
   versions, params, data manifests);
4. when the model is a registered version: log the metrics and files to that version's run,
   and move the alias ``champion`` to it if it beats the current champion on the primary metric
   (``primary_metric`` of ``drmnet`` in the summary group ``primary_test_set``, e.g. the mean
   relative si-RMSE of the tone-mapped mirror sphere on the real maps, falling back to the whole
   test set when it has no real maps; lower is better; the first evaluated version becomes
   champion). A champion whose recorded
   value came from other test data or settings is re-evaluated on this data first, so the two
   numbers compared always come from the same samples. The decision goes to ``champion.json``.
   The registry's part (the decision, logging to the run, model records) is
   :mod:`pipeline.registry`'s; what identifies the test data is :mod:`pipeline.evaluation.provenance`.

Arrays never travel through Prefect: tasks return lists of small per-sample rows. (Importing
this module runs ``pipeline/flows/__init__.py`` first, which sets Prefect's defaults.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from fileio.atomic import atomic_write_bytes
from pipeline.evaluation.provenance import data_record, fingerprint
from pipeline.evaluation.results import group_counts, primary_value, settings_record, summarize, write_results
from pipeline.evaluation.scoring import evaluate_test_set
from pipeline.evaluation.test_sets import load_test_sets
from pipeline.settings import EvaluateSettings


def run_evaluation(
    params: dict[str, Any],
    model: str | None = None,
    obsnet: str | None = None,
    out_dir: str | os.PathLike = "eval",
    evaluate_set: Callable[..., list[dict[str, Any]]] = evaluate_test_set,
) -> dict[str, Any]:
    """Evaluate ``model`` (+ ``obsnet``) as the module docstring describes. Defaults come from
    params.yaml's ``evaluate`` section (``model``, ``obsnet``). Returns the summary
    ``{test_set: {method: {metric: mean}}}``."""
    import shutil

    from pipeline.registry import (
        decide_champion,
        git_commit,
        load_estimator,
        log_to_run,
        model_record,
        registered_version,
    )

    overrides = {"model": model, "obsnet": obsnet}
    section = {**(params.get("evaluate") or {}), **{k: v for k, v in overrides.items() if v is not None}}
    settings = EvaluateSettings.from_params(section)
    model, obsnet = settings.model, settings.obsnet
    version = registered_version(model)  # resolved once: "latest" must not move during the run
    out = Path(out_dir)
    gallery = out / "gallery"
    if gallery.exists():
        shutil.rmtree(gallery)  # a gallery of an earlier model must not mix into this report

    estimator = load_estimator(model if version is None else "models:/{}/{}".format(*version), obsnet)
    test_sets = load_test_sets(settings, params)
    rows: list[dict[str, Any]] = []
    for samples in test_sets.values():
        rows += evaluate_set(estimator, samples, settings, gallery)
    files = write_results(rows, out)
    summary = summarize(rows)

    data = data_record(settings, test_sets)
    provenance = {
        "git_commit": git_commit() or "unknown",
        "models": {"drmnet": model_record(model, version), "obsnet": model_record(obsnet)},
        "data": data,
        "counts": group_counts(rows),
        "params": {
            "profile": params.get("profile"),
            "evaluate": settings_record(settings),
        },
        "fingerprint": fingerprint(data, settings),
        "time": _now(),
    }
    files["provenance"] = atomic_write_bytes(out / "provenance.json", _json(provenance))

    decision: dict[str, Any] = {
        "promoted": False,
        "decision": f"{model} is not a registered model version: the registry was left as it was",
    }
    if version is not None:
        primary_test_set = settings.primary_test_set.split("/", 1)[0]
        primary_set = test_sets.get(primary_test_set) or next(iter(test_sets.values()))

        def evaluate_champion(uri: str) -> float:
            champion_rows = evaluate_test_set(load_estimator(uri, obsnet), primary_set, settings, None)
            return primary_value(summarize(champion_rows), settings)

        decision = decide_champion(
            *version,
            primary_value(summary, settings),
            settings.primary_metric,
            provenance["fingerprint"],
            evaluate_champion,
            companion=registered_version(obsnet) if obsnet is not None else None,
        )
    files["champion"] = atomic_write_bytes(out / "champion.json", _json(decision))
    if version is not None:
        log_to_run(*version, summary, list(files.values()))
    return summary


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@task(name="evaluate-test-set", cache_policy=NO_CACHE, persist_result=False)
def evaluate_test_set_task(estimator, samples, settings, gallery_dir) -> list[dict[str, Any]]:
    """:func:`evaluate_test_set` as a Prefect task (one per test set)."""
    return evaluate_test_set(estimator, samples, settings, gallery_dir)


@flow(name="evaluate", persist_result=False)
def evaluate(
    params_path: str = "params.yaml",
    model: str | None = None,
    obsnet: str | None = None,
    out_dir: str = "eval",
) -> dict[str, Any]:
    """Evaluate a model version on the test sets (see the module docstring)."""
    from pipeline.config import load_params

    return run_evaluation(
        load_params(params_path), model, obsnet, out_dir, evaluate_set=evaluate_test_set_task
    )
