"""Prefect deployments against a real Prefect server on 127.0.0.1: serve, trigger through the API,
wait for COMPLETED, check the work was done in the served root (not the DVC workspace), list it with
the Prefect CLI, shut everything down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.deployments import prepare_served_root
from rendering.errors import InputError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} did not become healthy")


def _deployed_flows(url: str) -> set[str]:
    """Names of the flows that have a deployment on the server (through its REST API)."""
    request = urllib.request.Request(
        f"{url}/deployments/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        deployments = json.loads(response.read())
    flow_ids = {d["flow_id"] for d in deployments}
    names = set()
    for flow_id in flow_ids:
        with urllib.request.urlopen(f"{url}/flows/{flow_id}", timeout=10) as response:
            names.add(json.loads(response.read())["name"])
    return names


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start` on a free loopback port with its own sqlite database."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  (closed below)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_healthy(url, server)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        _stop(server)
        log.close()


def _tiny_workspace(root: Path) -> Path:
    """A workspace with the repository's params.yaml shrunk to a few samples."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["envmaps"] = {
        **params.get("envmaps", {}),
        "n": 3,
        "envmap_height": 16,
        "kinds": {"sky": 1.0},
        "real": False,
    }
    params["profiles"]["tiny"].pop("dataset", None)  # the sample counts below, not the profile's
    params["envmaps_split"] = {"seed": 0, "proportions": {"train": 0.34, "val": 0.33, "test": 0.33}}
    params["dataset"] = {
        **params["dataset"],
        "shard_size": 2,
        "samples": {"drmnet": {"train": 0, "val": 2, "test": 0}, "obsnet": {"train": 0, "val": 0, "test": 0}},
        "workers": 1,
    }
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(REPO / "data" / "user", root / "data" / "user")  # params.yaml's (empty) user dirs
    return root


def _prefect_cli(commands: list[list[str]], env: dict[str, str]) -> list[str]:
    """``prefect ARGS`` for each of ``commands`` against the server, all at once; each must answer
    (exit 0). Wide enough that rich's tables print whole names. Their outputs, in order."""
    processes = [
        subprocess.Popen(
            [str(BIN / "prefect"), *args],
            env={**env, "COLUMNS": "250"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outputs = []
    for args, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"prefect {' '.join(args)} failed:\n{stdout}\n{stderr}"
        outputs.append(stdout)
    return outputs


def test_served_root_links_the_inputs_and_none_of_the_outputs(tmp_path):
    workspace = tmp_path / "workspace"
    for relative in ("data/user/envmaps/a.exr", "data/materials/gold.json", "data/envmaps/train/x.exr"):
        (workspace / relative).parent.mkdir(parents=True, exist_ok=True)
        (workspace / relative).write_text(relative)
    (workspace / "data/shards/drmnet").mkdir(parents=True)
    (workspace / "params.yaml").write_text("profile: tiny\n")

    root = prepare_served_root(workspace / "served", workspace)

    assert (root / "params.yaml").read_text() == "profile: tiny\n"
    assert (root / "data/user/envmaps/a.exr").read_text() == "data/user/envmaps/a.exr"
    assert (root / "data/materials").resolve() == workspace / "data/materials"  # caches are shared
    assert not (root / "data/envmaps").exists() and not (root / "data/shards").exists()
    # Again, as every `drmnet serve` does: a data entry added meanwhile is linked, outputs stay.
    (root / "data/envmaps/train").mkdir(parents=True)
    (workspace / "data/real_envmaps").mkdir()
    prepare_served_root(workspace / "served", workspace)
    assert (root / "data/real_envmaps").resolve() == workspace / "data/real_envmaps"
    assert not (root / "data/envmaps").is_symlink()
    assert [p.name for p in (workspace / "data/envmaps/train").iterdir()] == ["x.exr"]
    # What the root made of its own before the workspace had it (a cache) is kept.
    (root / "data/envmap_cache").mkdir()
    (workspace / "data/envmap_cache").mkdir()
    prepare_served_root(workspace / "served", workspace)
    assert not (root / "data/envmap_cache").is_symlink()
    with pytest.raises(InputError, match="params.yaml"):  # not a workspace
        prepare_served_root(tmp_path / "served", tmp_path)


def _run_deployment(name: str, params: dict[str, str], cwd: Path, env: dict[str, str]) -> str:
    command = [str(BIN / "prefect"), "deployment", "run", f"{name}/default", "--watch", "--watch-timeout=400"]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_served_deployments_run_through_a_real_server(prefect_server, tmp_path):
    workspace = _tiny_workspace(tmp_path / "workspace")
    serve_log = open(tmp_path / "serve.log", "w")  # noqa: SIM115  (closed below)
    server_env = prefect_server
    serving = subprocess.Popen(
        [str(BIN / "drmnet"), "serve", "make-envmap-splits", "render-dataset", "--limit", "1"],
        cwd=workspace,
        env=server_env,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # The serving process registers its deployments with the server; wait until it has.
        deadline = time.monotonic() + 120
        while {"make-envmap-splits", "render-dataset"} - _deployed_flows(server_env["PREFECT_API_URL"]):
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "deployments were not registered within 120 s"
            time.sleep(0.5)
        out = _run_deployment("make-envmap-splits", {}, workspace, server_env)
        assert "Completed" in out
        served = workspace / "served"  # served runs' own output root (pipeline/deployments.py)
        assert list((served / "data/envmaps/train").glob("*.exr")), "the envmap flow wrote no envmaps"
        # A parameter overridden at run time: the deployment's default split is `train`, which has no
        # samples in this workspace; `val` has two.
        out = _run_deployment("render-dataset", {"split": "val"}, workspace, server_env)
        assert "Completed" in out
        shards = sorted((served / "data/shards/drmnet/val").glob("*.tar"))
        assert len(shards) == 1
        verify = subprocess.run(
            [str(BIN / "drmnet"), "verify-shards", str(served / "data/shards/drmnet/val")],
            cwd=workspace,
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        # Nothing of `dvc repro`'s outputs was written in the workspace.
        assert not (workspace / "data/envmaps").exists() and not (workspace / "data/shards").exists()

        # The Prefect CLI answers against this server and lists what was deployed and run.
        listings = [["deployment", "ls"], ["flow", "ls"], ["flow-run", "ls"], ["work-pool", "ls"]]
        deployments, flows, runs, pools = _prefect_cli(listings, server_env)
        assert "make-envmap-splits/default" in deployments and "render-dataset/default" in deployments
        assert "make-envmap-splits" in flows and "render-dataset" in flows
        assert "make-envmap-splits" in runs and "render-dataset" in runs
        assert runs.count("COMPLETED") == 2
        assert "No work pools found" in pools  # served deployments need no work pool
    finally:
        _stop(serving)
        serve_log.close()
        shutil.rmtree(workspace / "served", ignore_errors=True)
