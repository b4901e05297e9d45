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

Arrays never travel through Prefect: tasks return lists of small per-sample rows. (Importing
this module runs ``pipeline/flows/__init__.py`` first, which sets Prefect's defaults.)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from fileio.atomic import atomic_write_bytes
from pipeline.evaluation.results import group_counts, primary_value, settings_record, summarize, write_results
from pipeline.evaluation.scoring import evaluate_test_set
from pipeline.evaluation.test_sets import TestSample, load_test_sets
from pipeline.settings import EvaluateSettings
from pipeline.shards import file_sha256

CHAMPION = "champion"
TAG_PRIMARY = "eval.primary_value"  # model-version tags that remember what an evaluation found
TAG_METRIC = "eval.primary_metric"
TAG_FINGERPRINT = "eval.fingerprint"


# -- MLflow --------------------------------------------------------------------------------------


def _client():
    """An MlflowClient on the project's tracking store (``pipeline.registry.tracking_uri``)."""
    import mlflow

    from pipeline.registry import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    return mlflow.MlflowClient()


def registered_version(uri: str) -> tuple[str, str] | None:
    """(name, version) of a ``models:/name/<version|latest>`` or ``models:/name@alias`` URI, or
    None for a checkpoint directory. Raises InputError when the version does not exist."""
    if not str(uri).startswith("models:/"):
        return None
    from mlflow.exceptions import MlflowException

    from rendering.errors import InputError

    body = str(uri)[len("models:/") :]
    client = _client()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return name, str(client.get_model_version_by_alias(name, alias).version)
        name, _, version = body.partition("/")
        if version in ("", "latest"):
            versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
            if not versions:
                raise InputError(uri, f"registered model {name!r} has no versions")
            return name, str(versions[0].version)
        return name, str(client.get_model_version(name, version).version)
    except MlflowException as error:
        raise InputError(uri, f"no such model version in the MLflow registry ({error.message})") from None


def _flatten(summary: dict[str, Any]) -> dict[str, float]:
    """``{test_set: {method: {metric: v}}}`` → ``{"eval.test_set.method.metric": v}``."""
    return {
        f"eval.{test_set}.{method}.{metric}": value
        for test_set, methods in summary.items()
        for method, values in methods.items()
        for metric, value in values.items()
    }


def log_to_run(name: str, version: str, summary: dict[str, Any], files: list[Path]) -> str:
    """Log the means and the result files to the run that produced model ``name`` ``version``."""
    import time

    from mlflow.entities import Metric

    client = _client()
    run_id = client.get_model_version(name, version).run_id
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, 0) for key, value in _flatten(summary).items()]
    for start in range(0, len(metrics), 500):  # MLflow's batch limit is 1000 metrics
        client.log_batch(run_id, metrics=metrics[start : start + 500])
    for path in files:
        client.log_artifact(run_id, str(path), "evaluation")
    return run_id


def decide_champion(
    name: str,
    version: str,
    value: float,
    metric: str,
    fingerprint: str,
    evaluate_champion: Callable[[str], float],
    companion: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Record this version's primary value (tags) and move ``champion`` to it when it is lower
    than the champion's on the same data (``evaluate_champion(uri)`` measures a champion whose
    recorded value came from other data); the first evaluated version becomes champion.
    ``companion`` (name, version), the ObsNet evaluated with it, becomes champion alongside, so
    that ``models:/drmnet@champion`` + ``models:/obsnet@champion`` is the pair that was measured."""
    from mlflow.exceptions import MlflowException

    client = _client()
    for key, tag in ((TAG_PRIMARY, repr(value)), (TAG_METRIC, metric), (TAG_FINGERPRINT, fingerprint)):
        client.set_model_version_tag(name, version, key, tag)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    decision: dict[str, Any] = {"model": name, "version": version, "metric": metric, "value": value}
    if current is None:
        promoted, previous, champion_value = True, None, None
        text = f"{name} v{version} is the first champion"
    elif str(current.version) == str(version):
        promoted, previous, champion_value = True, str(version), value
        text = f"{name} v{version} stays champion"
    else:
        tags = current.tags or {}
        if tags.get(TAG_FINGERPRINT) == fingerprint and tags.get(TAG_METRIC) == metric:
            champion_value = float(tags[TAG_PRIMARY])
        else:
            champion_value = evaluate_champion(f"models:/{name}/{current.version}")
        promoted, previous = value < champion_value, str(current.version)
        verb = "replaces" if promoted else "does not beat"
        text = f"{name} v{version} ({metric} {value:.4g}) {verb} champion v{previous} ({champion_value:.4g})"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        if companion is not None:
            client.set_registered_model_alias(companion[0], CHAMPION, companion[1])
    decision.update(promoted=promoted, previous=previous, previous_value=champion_value, decision=text)
    return decision


# -- provenance ----------------------------------------------------------------------------------


def model_record(uri: str | None, version: tuple[str, str] | None = None) -> dict[str, Any] | None:
    """What identifies a model: its URI and registry version/run, or its directory's weight hash.
    ``version`` is the (name, version) the URI was already resolved to."""
    if uri is None:
        return None
    version = version or registered_version(uri)
    if version is not None:
        info = _client().get_model_version(*version)
        return {"uri": uri, "name": version[0], "version": version[1], "run_id": info.run_id}
    from models.weights import WEIGHTS_FILE

    weights = Path(uri) / WEIGHTS_FILE
    return {"uri": str(uri), "sha256": file_sha256(weights) if weights.exists() else None}


def data_record(settings: EvaluateSettings, test_sets: dict[str, list[TestSample]]) -> dict[str, Any]:
    """Per test set: sample count and the digests of the manifests the samples came from."""
    from pipeline.reader import SHARDS_MANIFEST
    from pipeline.splits import ENVMAP_TABLE

    split_dir = Path(settings.shards) / settings.dataset / "test"
    manifest = split_dir / SHARDS_MANIFEST
    table = Path(settings.envmaps) / "test" / ENVMAP_TABLE
    out = {}
    for name, samples in test_sets.items():
        rendered_here = any(s.info.get("rendered_here") for s in samples)
        out[name] = {
            "samples": len(samples),
            "source": "rendered by evaluate (built-in measured BRDFs)" if rendered_here else str(split_dir),
            "shards_manifest_sha256": file_sha256(manifest)[:16] if manifest.exists() else None,
            "envmaps_table_sha256": file_sha256(table)[:16] if table.exists() else None,
        }
    return out


def fingerprint(data: dict[str, Any], settings: EvaluateSettings) -> str:
    """Identifies the test data and evaluation settings: equal fingerprints → comparable values."""
    text = json.dumps(
        {"data": data, "settings": settings_record(settings, with_models=False)}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the composition -----------------------------------------------------------------------------


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

    from pipeline.registry import git_commit, load_estimator

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
