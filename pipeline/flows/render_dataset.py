"""The ``render-dataset`` Prefect flow: envmap split → WebDataset shards + parquet manifests.

Datasets: ``drmnet`` and ``obsnet`` (:mod:`pipeline.samples`), and ``measured``, the measured test
set evaluation scores when the test shards hold no measured samples (:mod:`pipeline.measured_set`).

One task per shard. A shard's bytes are a pure function of (params, shard index): every sample
seed derives from ``dataset.seed``, the dataset, the split and the sample index
(:mod:`pipeline.samples`), so the runner (threads, processes, a Dask cluster) and the number of
workers never change the output.

Resumable and atomic: a task writes its shard to a temporary name, renames it, then writes the
shard's completion record (``records/<shard>.json``: sha256, size, spec fingerprint, manifest
rows). A rerun skips every shard whose record matches the current spec and whose file still has
the recorded size and sha256, and renders the rest (a killed run, a corrupted or truncated shard,
changed params). The manifests are removed when a run starts and written from the records when
every shard is done, so a split directory with ``manifest-shards.parquet`` is complete.

Shard arrays travel through files, never through Prefect results: tasks return small dicts and
persist nothing (no Prefect cache: resumption is the records' job).

Runs with Prefect's ephemeral API (no server needed); a Dask cluster through ``prefect-dask``.
The ``processes`` runner (Prefect's ProcessPoolTaskRunner) *spawns* its workers, never forks
them (a fork after Dr.Jit started its threads can hang), and each worker activates its own
Mitsuba variant: when called from a script, call :func:`run_render_dataset` under
``if __name__ == "__main__":`` (spawned workers re-import the caller's main module).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

# (pipeline/flows/__init__.py, imported before this module, has set Prefect's defaults.)
from pipeline.locks import output_lock
from pipeline.manifest import (
    RECORDS_DIR,
    SAMPLES_MANIFEST,
    SHARDS_MANIFEST,
    finished_record,
    record_path,
    sample_row,
    write_manifests,
    write_record,
)
from pipeline.measured_set import MEASURED, MeasuredSetSettings, measured_samples
from pipeline.measured_set import code_digest as measured_code_digest
from pipeline.samples import (
    DatasetSettings,
    augmented_envmap,
    make_samples,
    measured_digest,
    plan_sample,
    settings_from_params,
)
from pipeline.shards import sample_key, shard_name, write_shard
from pipeline.splits import read_envmap_table, split_envmap_path

FORMAT_VERSION = 2  # bump when the sample layout changes: old records then no longer match (2: float16)
RUNNERS = ("threads", "processes", "dask")
# Sources whose change changes the samples: a record made by other code is not trusted.
CONTENT_SOURCES = (
    "rendering",
    "models/drm.py",
    "models/config.py",
    "pipeline/samples.py",
    "pipeline/settings.py",  # how the dataset section becomes DatasetSettings
    "pipeline/shards.py",
)
_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard task needs (small and picklable: it travels to Dask workers)."""

    dataset: str
    split: str
    shard: int
    first: int  # index of the shard's first sample in the split
    count: int
    split_dir: str  # where the shard goes
    envmap_dir: str
    envmap_ids: tuple[str, ...]
    settings: DatasetSettings
    variant: str  # Mitsuba variant (cuda and llvm differ in the last bits)
    spec: str  # fingerprint of all of the above that determines the bytes
    measured: MeasuredSetSettings | None = None  # the measured test set's (pipeline.measured_set)

    @property
    def name(self) -> str:
        return shard_name(self.dataset, self.split, self.shard)


def code_digest() -> str:
    """sha256 over the sources that determine a sample's content (CONTENT_SOURCES)."""
    digest = hashlib.sha256()
    for source in CONTENT_SOURCES:
        path = _ROOT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def plan_shards(
    settings: DatasetSettings,
    dataset: str,
    split: str,
    out_dir: str | os.PathLike,
    envmap_dir: str | os.PathLike,
    variant: str,
    measured: MeasuredSetSettings | None = None,
) -> list[ShardJob]:
    """The shard jobs of (dataset, split): ``<out_dir>/<dataset>/<split>/``, ``shard_size`` samples
    each (the last one may hold fewer). ``measured``: the settings of the measured test set, for
    its dataset (pipeline.measured_set)."""
    table = read_envmap_table(envmap_dir, split)
    envmap_ids = tuple(table.column("id").to_pylist())
    # In table order: plan_sample assigns envmaps by their position in this list.
    envmaps = list(zip(envmap_ids, table.column("sha256").to_pylist(), strict=True))
    total = settings.count(dataset, split) if measured is None else measured.count
    base = {
        "format": FORMAT_VERSION,
        "code": code_digest(),
        "settings": settings.fingerprint(),
        "dataset": dataset,
        "split": split,
        "envmaps": envmaps,
        "variant": variant,
        "measured": measured_digest(settings),
    }
    if measured is not None:  # its own code and settings (only its spec changes with them)
        base["measured_set"] = {**asdict(measured), "code": measured_code_digest()}
    split_dir = str(Path(out_dir) / dataset / split)
    jobs = []
    for shard, first in enumerate(range(0, total, settings.shard_size)):
        count = min(settings.shard_size, total - first)
        spec = json.dumps({**base, "shard": shard, "first": first, "count": count}, sort_keys=True)
        jobs.append(
            ShardJob(
                dataset=dataset,
                split=split,
                shard=shard,
                first=first,
                count=count,
                split_dir=split_dir,
                envmap_dir=str(envmap_dir),
                envmap_ids=envmap_ids,
                settings=settings,
                variant=variant,
                spec=hashlib.sha256(spec.encode()).hexdigest(),
                measured=measured,
            )
        )
    return jobs


def render_shard(job: ShardJob) -> dict[str, Any]:
    """Render and write one shard unless it is already finished; returns a small summary dict
    (shard, samples, sha256, skipped, seconds, worker = ``host:pid`` of the process that ran it).
    No Prefect needed: usable on its own."""
    started = time.perf_counter()
    record = finished_record(job.split_dir, job.name, job.spec)
    skipped = record is not None
    if not skipped:
        from rendering.envmap import read_envmap
        from rendering.variant import RENDER_LOCK, ensure_variant

        ensure_variant(job.variant)
        envmaps: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []

        def samples():
            if job.measured is not None:
                indices = range(job.first, job.first + job.count)
                with RENDER_LOCK:
                    made = list(
                        measured_samples(job.measured, job.settings, job.envmap_dir, job.split, indices)
                    )
                for index, (key, sample) in zip(indices, made, strict=True):
                    rows.append(sample_row(key, job.name, index, sample))
                    yield key, sample
                return
            # Planning renders too (a measured material's principled fit, the first time).
            with RENDER_LOCK:
                plans = [
                    plan_sample(job.settings, job.dataset, job.split, index, list(job.envmap_ids))
                    for index in range(job.first, job.first + job.count)
                ]
            # Consecutive samples of one envmap draw render in one call (pipeline.samples).
            for group in _runs(plans):
                draw = group[0].envmap_draw
                with RENDER_LOCK:
                    if draw.envmap_id not in envmaps:
                        envmaps[draw.envmap_id] = read_envmap(
                            split_envmap_path(job.envmap_dir, job.split, draw.envmap_id)
                        )
                    envmap = augmented_envmap(envmaps[draw.envmap_id], draw)
                    made = make_samples(group, envmap, job.settings)
                for plan, sample in zip(group, made, strict=True):
                    key = sample_key(job.dataset, job.split, plan.index)
                    rows.append(sample_row(key, job.name, plan.index, sample))
                    yield key, sample

        info = write_shard(Path(job.split_dir) / job.name, samples())
        record = {
            "shard": job.name,
            "samples": info.samples,
            "bytes": info.bytes,
            "sha256": info.sha256,
            "spec": job.spec,
            "rows": rows,
        }
        write_record(job.split_dir, record)
    return {
        "shard": job.name,
        "samples": record["samples"],
        "sha256": record["sha256"],
        "skipped": skipped,
        "seconds": time.perf_counter() - started,
        "worker": worker_id(),
    }


def _runs(plans: list) -> Iterator[list]:
    """Maximal runs of consecutive plans with the same envmap draw."""
    group: list = []
    for plan in plans:
        if group and plan.envmap_draw != group[0].envmap_draw:
            yield group
            group = []
        group.append(plan)
    if group:
        yield group


def worker_id() -> str:
    """``host:pid`` of this process: which worker of a runner rendered a shard."""
    return f"{socket.gethostname()}:{os.getpid()}"


def prepare_split_dir(split_dir: str | os.PathLike) -> None:
    """Mark the split incomplete (remove its manifests) and drop temporary files of killed runs."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for name in (SHARDS_MANIFEST, SAMPLES_MANIFEST):  # shards manifest first: it marks completion
        (split_dir / name).unlink(missing_ok=True)
    for folder in (split_dir, split_dir / RECORDS_DIR):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def finish_split_dir(jobs: list[ShardJob]) -> tuple[Path, Path]:
    """Remove shards and records that are not in the plan (an earlier, larger run), then write
    the manifests from the records."""
    split_dir = Path(jobs[0].split_dir)
    planned = {job.name for job in jobs}
    for stale in split_dir.glob("*.tar"):
        if stale.name not in planned:
            stale.unlink()
    for stale in (split_dir / RECORDS_DIR).glob("*.json"):
        if f"{stale.stem}.tar" not in planned:
            stale.unlink()
    records = []
    for job in jobs:
        record = json.loads(record_path(split_dir, job.name).read_text())
        if record["spec"] != job.spec:
            raise RuntimeError(f"{split_dir / job.name}: its record does not match this run's spec")
        records.append(record)
    return write_manifests(split_dir, records)


# --- Prefect ----------------------------------------------------------------------------------


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry anything but bad input (a retry cannot fix a broken file)."""
    from rendering.errors import InputError

    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True


@task(
    name="render-shard",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_worth_retrying,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def render_shard_task(job: ShardJob) -> dict[str, Any]:
    """Prefect task around :func:`render_shard` (retried twice unless the input is bad: a
    transient failure is not fatal)."""
    return render_shard(job)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@flow(name="render-dataset", persist_result=False)
def render_dataset(
    dataset: str,
    split: str,
    params_path: str | None = None,  # params.yaml (default: DRMNET_PARAMS or ./params.yaml)
    out_dir: str = "data/shards",  # shards go to <out_dir>/<dataset>/<split>/
    envmap_dir: str = "data/envmaps",  # <envmap_dir>/<split>/ from `drmnet make-envmap-splits`
    profile: str | None = None,  # params profile (default: params.yaml's `profile`)
) -> dict[str, Any]:
    """Render the shards of one (dataset, split), skipping finished ones, then write the manifests.
    One run per split directory at a time (pipeline/locks.py)."""
    with output_lock(Path(out_dir) / dataset / split, "drmnet render-dataset"):
        return _render_split(dataset, split, params_path, out_dir, envmap_dir, profile)


def _render_split(
    dataset: str, split: str, params_path: str | None, out_dir: str, envmap_dir: str, profile: str | None
) -> dict[str, Any]:
    from pipeline.config import load_params
    from rendering.variant import resolve_variant

    logger = get_run_logger()
    params = load_params(params_path)
    settings = settings_from_params(params, profile)
    variant = resolve_variant((params.get("render") or {}).get("variant"))
    measured = MeasuredSetSettings.from_params(params) if dataset == MEASURED else None
    jobs = plan_shards(settings, dataset, split, out_dir, envmap_dir, variant, measured)
    if not jobs:
        raise ValueError(f"dataset.samples.{dataset}.{split} is 0: nothing to render")
    split_dir = jobs[0].split_dir
    prepare_split_dir(split_dir)
    total = sum(job.count for job in jobs)
    logger.info(
        "%s/%s: %d samples in %d shards → %s (R=%d, spp=%d, %s)",
        dataset,
        split,
        total,
        len(jobs),
        split_dir,
        settings.refmap_res,
        settings.spp,
        variant,
    )

    started = time.perf_counter()
    done = done_samples = rendered = skipped = 0
    workers: set[str] = set()
    futures = {render_shard_task.submit(job): job for job in jobs}
    for future in as_completed(list(futures)):
        result = _shard_result(future, futures[future])
        done += 1
        done_samples += result["samples"]
        if result["skipped"]:
            skipped += 1
        else:
            rendered += result["samples"]
            workers.add(result["worker"])
        elapsed = time.perf_counter() - started
        rate = rendered / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - done_samples) / rate) if rate > 0 else "?"
        logger.info(
            "shard %d/%d %s (%s, %.1f s) · %.2f samples/s · ETA %s",
            done,
            len(jobs),
            result["shard"],
            "verified, skipped" if result["skipped"] else f"rendered by {result['worker']}",
            result["seconds"],
            rate,
            eta,
        )

    samples_path, shards_path = finish_split_dir(jobs)
    elapsed = time.perf_counter() - started
    logger.info(
        "%s/%s complete: %d shards (%d skipped), %d samples rendered in %s → %s",
        dataset,
        split,
        len(jobs),
        skipped,
        rendered,
        _duration(elapsed),
        shards_path,
    )
    return {
        "split_dir": split_dir,
        "shards": len(jobs),
        "skipped": skipped,
        "samples": total,
        "rendered_samples": rendered,
        "workers": sorted(workers),  # host:pid of each process that rendered a shard
        "seconds": elapsed,
    }


def _shard_result(future: Any, job: ShardJob) -> dict[str, Any]:
    """The result of a shard task; a failure names the shard it happened in."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        # The worker process itself died (killed, out of memory, a crash in native code): Prefect
        # cannot retry that, and the executor's own message names neither the shard nor the cause.
        raise RuntimeError(
            f"{Path(job.split_dir) / job.name}: not rendered: a worker process of the `processes` "
            "runner died (killed, out of memory, or a crash in Mitsuba/Dr.Jit). Finished shards "
            "are kept: rerun to render the rest."
        ) from error
    except Exception as error:
        error.add_note(f"while rendering shard {Path(job.split_dir) / job.name}")
        raise


def make_task_runner(runner: str = "threads", workers: int = 1, dask_address: str | None = None):
    """The Prefect task runner: ``threads`` (ThreadPoolTaskRunner), ``processes``
    (ProcessPoolTaskRunner: ``workers`` spawned processes, each compiling Mitsuba's kernels once)
    or ``dask`` (prefect-dask: the cluster at ``dask_address``, else a new local cluster of
    ``workers`` single-threaded processes). A Dask address implies dask."""
    if dask_address or runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    if runner == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    raise ValueError(f"unknown task runner {runner!r}; choose one of {RUNNERS}")


def run_render_dataset(
    dataset: str,
    split: str,
    *,
    params_path: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "data/shards",
    envmap_dir: str | os.PathLike = "data/envmaps",
    profile: str | None = None,
    runner: str | None = None,  # default: params.yaml dataset.runner
    workers: int | None = None,  # default: params.yaml dataset.workers
    dask_address: str | None = None,  # default: params.yaml dataset.dask_address
) -> dict[str, Any]:
    """Run the ``render-dataset`` flow with the task runner chosen by the arguments / params.yaml.

    With the ``processes`` runner, call this under ``if __name__ == "__main__":`` in a script
    (its workers are spawned and re-import the caller's main module)."""
    from pipeline.config import load_params

    section = load_params(params_path).get("dataset") or {}
    runner = runner or section.get("runner", "threads")
    dask_address = dask_address or section.get("dask_address")
    task_runner = make_task_runner(runner, int(workers or section.get("workers", 1)), dask_address)
    # Worker processes on this machine: spawned processes, or a local Dask cluster's workers.
    local_processes = runner == "processes" or (runner == "dask" and not dask_address)
    # Locked here too (the flow locks again, for deployment runs): a second writer is refused
    # before Prefect starts, with one line rather than a failed flow run.
    with output_lock(Path(out_dir) / dataset / split, "drmnet render-dataset"):
        with _api_shared_with_subprocesses(local_processes):
            return render_dataset.with_options(task_runner=task_runner)(
                dataset,
                split,
                None if params_path is None else str(params_path),
                str(out_dir),
                str(envmap_dir),
                profile,
            )


@contextmanager
def _api_shared_with_subprocesses(needed: bool) -> Iterator[None]:
    """Point worker processes on this machine at this process's Prefect API.

    Without a configured ``PREFECT_API_URL`` Prefect starts an ephemeral API server on demand,
    and a spawned worker knows nothing of its parent's: each would start its own server on the
    same database (seconds each, and concurrent migrations of one SQLite file). So start the
    ephemeral server here and hand its URL to the workers through the settings they inherit.
    (A remote Dask cluster cannot reach this loopback server: give it a real PREFECT_API_URL.)
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if not needed or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's own clients use; started once
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield
