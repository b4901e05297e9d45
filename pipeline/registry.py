"""MLflow: training runs (params, per-step losses, sample grids, provenance) and the model
registry (``drmnet`` = IllNet + RefNet, ``obsnet``), and loading an :class:`Estimator` back
from a registry URI or a checkpoint directory.

Tracking: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` with artifacts under
``mlartifacts/`` (MLflow 3 refuses a plain ``./mlruns`` file store). ``mlflow ui`` / ``make ui``
shows them. Both are the working tree's own: MLflow stores artifact locations as absolute paths,
so in a copied (or moved) tree the first registry operation points them at the copy's
``mlartifacts/`` (:func:`_relocate_copied_tree`); the original is never written or read.

Registered models are ``mlflow.pyfunc`` models written from code
(``pipeline/registry_model.py``) whose artifacts are the model directory: ``config.json`` +
``ema.safetensors`` (models/weights.py). Nothing is pickled, so a version loads back without
the training code; the ``models`` package (and ``fileio``, which it imports) travels with it
(``code_paths``). A new version gets
the alias ``candidate``; evaluation decides ``champion`` (:func:`decide_champion`), logs its
results to the version's run (:func:`log_to_run`) and records which models it measured
(:func:`model_record`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rendering.errors import InputError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_ROOT = Path("mlartifacts")
EXPERIMENT = "drmnet"
CANDIDATE = "candidate"
CHAMPION = "champion"
TAG_PRIMARY = "eval.primary_value"  # model-version tags that remember what an evaluation found
TAG_METRIC = "eval.primary_metric"
TAG_FINGERPRINT = "eval.fingerprint"
MODEL_CODE = Path(__file__).with_name("registry_model.py")
MODELS_PACKAGE = Path(__file__).resolve().parent.parent / "models"
FILEIO_PACKAGE = Path(__file__).resolve().parent.parent / "fileio"  # models.weights writes through it
METRICS_PER_BATCH = 500  # MLflow accepts at most 1000 metrics per log_batch call
_ROOT = Path(__file__).resolve().parent.parent


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the embedded default ``sqlite:///mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _client():
    import mlflow

    _relocate_copied_tree()
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    return mlflow.MlflowClient()


# Where the embedded store keeps artifact URIs (MLflow 3.17's schema): each starts with the
# experiment's artifact location.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)
_relocated: set[Path] = set()  # embedded stores checked by this process


def _relocate_copied_tree() -> None:
    """Make the embedded store's artifact locations this tree's ``mlartifacts/`` when they name
    another tree's: the store was copied (``cp -a``) or moved with its tree. Otherwise the copy
    would log into, and load models from, the original's artifacts. Once per store and process;
    a tracking server or any ``MLFLOW_TRACKING_URI`` is left alone."""
    if tracking_uri() != DEFAULT_TRACKING_URI:
        return
    database = Path(DEFAULT_TRACKING_URI.removeprefix("sqlite:///")).resolve()
    if database in _relocated or not database.is_file():
        return
    import sqlite3
    from contextlib import closing

    here = ARTIFACT_ROOT.resolve().as_uri()
    with closing(sqlite3.connect(database)) as connection, connection:
        try:
            found = connection.execute(
                "SELECT artifact_location FROM experiments WHERE name = ?", (EXPERIMENT,)
            ).fetchone()
        except sqlite3.OperationalError:  # a store MLflow has not set up yet
            return
        stored = found[0] if found else None
        copied = stored is not None and stored != here and stored.startswith("file://")
        if copied and stored.rsplit("/", 1)[-1] == ARTIFACT_ROOT.name:
            for table, column in _ARTIFACT_COLUMNS:
                connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (here, len(stored) + 1, stored, len(stored) + 1, stored + "/"),
                )
            print(f"{database}: artifacts of a copied tree: {stored} -> {here}", file=sys.stderr)
    _relocated.add(database)


def experiment_id(name: str = EXPERIMENT) -> str:
    """The experiment's id, created on first use with its artifacts under ``mlartifacts/``."""
    client = _client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=ARTIFACT_ROOT.resolve().as_uri())


def git_commit() -> str | None:
    """HEAD's commit (``-dirty`` when tracked files changed), or None outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def data_version(split_dir: str | os.PathLike | None) -> dict[str, str]:
    """What identifies the training data: the digest of the split's shard manifest and, when
    dvc.lock records the directory, DVC's own hash of it."""
    if split_dir is None:
        return {}
    from pipeline.manifest import SHARDS_MANIFEST
    from pipeline.shards import file_sha256

    split_dir = Path(split_dir)
    out = {}
    manifest = split_dir / SHARDS_MANIFEST
    if manifest.is_file():
        out["data.shards_manifest_sha256"] = file_sha256(manifest)[:16]
    lock = _ROOT / "dvc.lock"
    if lock.is_file():
        import yaml

        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for entry in stage.get("outs", []):
                if (_ROOT / entry.get("path", "")).resolve() == split_dir.resolve():
                    out["data.dvc_md5"] = str(entry.get("md5"))
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params → ``{"a.b.c": "value"}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


class RunTracker:
    """An MLflow run that a training loop reports to (implements pipeline.training.tracker.Tracker).

    Per-step metrics are buffered and sent in batches (one database write per batch, not per
    step); images are logged with ``mlflow.log_image`` under their name.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._client = _client()
        self._metrics: list = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics += [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        if len(self._metrics) >= METRICS_PER_BATCH:
            self.flush()

    def log_image(self, image: np.ndarray, name: str, step: int) -> None:
        self._client.log_image(self.run_id, np.ascontiguousarray(image, dtype=np.uint8), artifact_file=name)

    def flush(self) -> None:
        while self._metrics:
            batch, self._metrics = self._metrics[:METRICS_PER_BATCH], self._metrics[METRICS_PER_BATCH:]
            self._client.log_batch(self.run_id, metrics=batch)


def _continued_run(client, run_id: str | None, net: str):
    """The run ``run_id`` if the tracking store holds it (active, training ``net``), else None."""
    from mlflow.exceptions import MlflowException

    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active" or run.data.tags.get("drmnet.net") != net:
        return None
    return run


@contextmanager
def training_run(
    net: str,
    params: dict[str, Any],
    data_dir: str | os.PathLike | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
) -> Iterator[RunTracker]:
    """Start an MLflow run for training ``net``: params (flattened), the git commit and the data
    version as tags. ``run_id`` (a resumed training's run): continue that run instead when the
    tracking store holds it (its params are those of the same fingerprint; the tag
    ``drmnet.resumed`` counts the continuations). Yields the tracker; the run ends FINISHED, or
    FAILED on an exception."""
    client = _client()
    run = _continued_run(client, run_id, net)
    if run is not None:
        client.update_run(run.info.run_id, status="RUNNING")
        resumed = int(run.data.tags.get("drmnet.resumed", "0")) + 1
        client.set_tag(run.info.run_id, "drmnet.resumed", str(resumed))
    else:
        tags = {"drmnet.net": net, **data_version(data_dir)}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = client.create_run(experiment_id(), run_name=run_name or f"train-{net}", tags=tags)
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[start : start + 100])
    tracker = RunTracker(run.info.run_id)
    try:
        yield tracker
    except BaseException:
        tracker.flush()
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    tracker.flush()
    client.set_terminated(run.info.run_id, "FINISHED")


def register_model(
    net: str, model_dir: str | os.PathLike, run_id: str | None = None, alias: str = CANDIDATE
) -> str:
    """Log ``model_dir`` (``config.json`` + ``ema.safetensors``) as a pyfunc model, register a new
    version of the model named ``net`` and point ``alias`` at it. Returns the version."""
    import mlflow

    from models.weights import CONFIG_FILE, WEIGHTS_FILE

    model_dir = Path(model_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (model_dir / name).is_file():
            raise InputError(model_dir, f"has no {name}: not a trained model directory")
    client = _client()
    with tempfile.TemporaryDirectory() as tmp:
        # Only the inference files go to the registry, not the optimizer state.
        staged = Path(tmp) / net
        staged.mkdir()
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(model_dir / name, staged / name)
        active = mlflow.active_run()
        with _run_context(run_id, active):
            info = mlflow.pyfunc.log_model(
                name=net,
                python_model=str(MODEL_CODE),
                artifacts={net: str(staged)},
                code_paths=[str(MODELS_PACKAGE), str(FILEIO_PACKAGE)],
                pip_requirements=_requirements(),
                registered_model_name=net,
            )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(net, alias, version)
    return version


@contextmanager
def _run_context(run_id: str | None, active):
    """Inside the given run (resumed), the active one, or a new run of the experiment."""
    import mlflow

    if active is not None and (run_id is None or active.info.run_id == run_id):
        yield active
        return
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id()) as run:
        yield run


def _requirements() -> list[str]:
    """The model's runtime dependencies, pinned to what is installed (no inference run)."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("torch", "safetensors", "numpy", "mlflow")]


def resolve_model_dir(uri: str | os.PathLike) -> Path:
    """A checkpoint/model directory as is, or a registry URI (``models:/name@alias``,
    ``models:/name/<version|latest>``, ``runs:/…``) downloaded → the directory holding
    ``config.json`` + ``ema.safetensors``."""
    text = str(uri)
    if "://" not in text and ":/" not in text:
        path = Path(text)
        if not path.is_dir():
            raise InputError(path, "is neither a model directory nor a models:/ URI")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    _client()
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
    except MlflowException as error:
        raise InputError(
            text,
            f"no such registered model version or alias in the registry at "
            f"{tracking_uri()} ({error.message})",
        ) from None
    from models.weights import CONFIG_FILE

    found = sorted(p.parent for p in local.rglob(CONFIG_FILE))
    if not found:
        raise InputError(text, "the artifact holds no drmnet model (config.json missing)")
    return found[0]


def load_estimator(drmnet_uri: str, obsnet_uri: str | None = None, device: str | None = None):
    """An :class:`models.estimator.Estimator` from two model references, each a registry URI
    (``models:/drmnet@candidate``, ``models:/drmnet/3``, ``models:/drmnet/latest``) or a local
    model/checkpoint directory (e.g. ``checkpoints/drmnet``). ``obsnet_uri`` None: no ObsNet
    (fully observed refmaps only). A reference that does not exist raises InputError naming it."""
    from models.estimator import Estimator

    drmnet_dir = resolve_model_dir(drmnet_uri)
    obsnet_dir = resolve_model_dir(obsnet_uri) if obsnet_uri is not None else None
    try:
        return Estimator.from_directories(drmnet_dir, obsnet_dir, device)
    except (FileNotFoundError, ValueError) as error:
        source = drmnet_uri if obsnet_uri is None else f"{drmnet_uri} / {obsnet_uri}"
        raise InputError(source, str(error)) from None


# -- evaluation: model versions, their results and the champion ---------------------------------


def registered_version(uri: str) -> tuple[str, str] | None:
    """(name, version) of a ``models:/name/<version|latest>`` or ``models:/name@alias`` URI, or
    None for a checkpoint directory. Raises InputError when the version does not exist."""
    if not str(uri).startswith("models:/"):
        return None
    from mlflow.exceptions import MlflowException

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
    from pipeline.shards import file_sha256

    weights = Path(uri) / WEIGHTS_FILE
    return {"uri": str(uri), "sha256": file_sha256(weights) if weights.exists() else None}


def _summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
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
    metrics = [Metric(key, float(value), now, 0) for key, value in _summary_metrics(summary).items()]
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
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
