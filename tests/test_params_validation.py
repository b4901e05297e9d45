"""params.yaml is checked whole before a command starts: a bad key, type or value is one line naming
the key path, the value and what is allowed (exit code 2), and nothing on disk is touched."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.settings import EstimateSettings, Params, from_mapping, validate_params
from rendering.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "drmnet", "--no-register", "--device", "cpu"]
RENDER = ["render-dataset", "--dataset", "drmnet", "--split", "train"]
SPLITS = ["make-envmap-splits"]
EVALUATE = ["evaluate", "--model", "checkpoints/drmnet"]

# (key path, bad value, a command that reads it, what the message says is allowed)
BAD = [
    ("profiles.cpu.train_drmnet.total_samples", -100, TRAIN, "must be an integer >= 1"),
    ("dataset.shard_sizee", 33, RENDER, "unknown key (did you mean 'shard_size'?)"),
    ("train_drmnet.lr", "fast", TRAIN, "must be a number > 0"),
    ("profiles.tiny.spp", 6.5, RENDER, "must be an integer >= 1"),
    ("dataset.measured_fraction.test", 2, RENDER, "must be a number in [0, 1]"),
    ("envmaps.n", -3, SPLITS, "must be an integer >= 0"),
    ("profiles.cpu.envmaps.n", -3, SPLITS, "must be an integer >= 0"),
    ("dataset.shard_size", 0, RENDER, "must be an integer >= 1"),
    ("train_drmnet.batch_size", 0, TRAIN, "must be an integer >= 1"),
    ("profiles.tiny.illnet.channels", 0, TRAIN, "must be an integer >= 1"),
    ("train_drmnet.num_workers", -1, TRAIN, "must be an integer >= 0"),
    ("evaluate.samples", 0, EVALUATE, "must be an integer >= 1"),
    ("drm.gamma", 2, RENDER, "must be a number in (0, 1)"),
    ("evaluate.primary_metric", "mirror_rmsee", EVALUATE, "must be one of 'mirror_rmse'"),
    (
        "train_obsnet.diffusion.prediction",
        "x0",
        ["train", "obsnet", "--no-register"],
        "must be one of 'eps', 'v'",
    ),
    ("estimate.erode", True, ["report"], "must be an integer >= 0"),
]


def _repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _with(params: dict, path: str, value) -> dict:
    params = copy.deepcopy(params)
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return params


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A working directory with earlier work in it: a checkpoint, shards, envmaps, an evaluation."""
    for name in (
        "checkpoints/drmnet/state.pt",
        "checkpoints/obsnet/state.pt",
        "data/shards/drmnet/train/drmnet-train-000000.tar",
        "data/envmaps/train/envmaps.parquet",
        "eval/metrics.json",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(f"earlier work: {name}".encode())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DRMNET_PARAMS", raising=False)
    return tmp_path


def _drmnet(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the `drmnet` entry point in this process; its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["drmnet", *args])
    with pytest.raises(SystemExit) as exit:
        main()
    return exit.value.code, capsys.readouterr().err


@pytest.mark.parametrize(("path", "value", "command", "allowed"), BAD, ids=[case[0] for case in BAD])
def test_a_bad_value_is_one_line_naming_it_before_anything_is_touched(
    workspace, monkeypatch, capsys, path, value, command, allowed
):
    params = _with(_repo_params(), path, value)
    params["profile"] = path.split(".")[1] if path.startswith("profiles.") else "tiny"
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    before = _files(workspace)

    code, err = _drmnet([*command, "--params", "params.yaml"], monkeypatch, capsys)

    shown = (
        str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else value
    )
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: params.yaml: {path} = {shown}: "), err
    assert allowed in err
    assert _files(workspace) == before  # the checkpoint, shards, envmaps and evaluation are intact


BROKEN_YAML = [
    (
        "profile: tiny\nenvmaps: {n: [\n",
        "line 3, column 1: expected the node content, but found '<stream end>'",
    ),
    ("envmaps:\n  n: 3\n    res: 8\n", "line 3, column 8: mapping values are not allowed here"),
    ("envmaps:\n\tn: 3\n", "line 2, column 1: found character '\\t' that cannot start any token"),
    ("profile: \x00\n", "character 10: special characters are not allowed"),
]


@pytest.mark.parametrize(("text", "where"), BROKEN_YAML, ids=["unclosed", "indent", "tab", "nul"])
def test_a_yaml_syntax_error_is_one_line_saying_where(workspace, monkeypatch, capsys, text, where):
    (workspace / "params.yaml").write_text(text)
    before = _files(workspace)
    code, err = _drmnet([*SPLITS, "--params", "params.yaml"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: params.yaml: not valid YAML: {where}"), err
    (workspace / "params.yaml").write_bytes(b"\xff\xfeprofile: tiny\n")
    code, err = _drmnet([*SPLITS, "--params", "params.yaml"], monkeypatch, capsys)
    assert code == 2 and err == "error: params.yaml: is not UTF-8 text (invalid start byte at byte 0)\n"
    assert _files(workspace) == {**before, "params.yaml": b"\xff\xfeprofile: tiny\n"}


def test_the_installed_command_refuses_a_negative_training_length_and_keeps_the_checkpoint(tmp_path):
    """The case that destroyed work: `total_samples: -100` used to delete the checkpoint, exit 0."""
    checkpoint = tmp_path / "checkpoints/drmnet/state.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint of hours of training")
    params = _with(_repo_params(), "profiles.cpu.train_drmnet.total_samples", -100)
    params["profile"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    result = subprocess.run(
        [str(Path(sys.executable).parent / "drmnet"), *TRAIN, "--params", "params.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert result.stderr == (
        "error: params.yaml: profiles.cpu.train_drmnet.total_samples = -100: must be an integer >= 1\n"
    )
    assert checkpoint.read_bytes() == b"a checkpoint of hours of training"


@pytest.mark.parametrize("profile", sorted(_repo_params()["profiles"]))
def test_the_repository_params_validate_for_every_profile(profile):
    params = {**_repo_params(), "profile": profile}
    typed = validate_params(params)
    assert isinstance(typed, Params) and typed.profile == profile
    assert typed.profiles[profile].refmap_res is not None and typed.profiles[profile].illnet is not None


def test_types_are_strict_but_an_integer_is_a_number():
    settings = from_mapping(EstimateSettings, {"samples": 2, "envmap_height": 16}, "estimate")
    assert settings.samples == 2 and settings.envmap_height == 16
    validate_params({"drm": {"gamma": 0.9, "eps": 1}})  # an int where a float is expected
    for section, problem in [
        ({"samples": 6.5}, "estimate.samples = 6.5: must be an integer >= 1"),
        ({"samples": True}, "estimate.samples = true: must be an integer >= 1"),
        ({"max_steps": "many"}, "estimate.max_steps = 'many': must be an integer >= 1 or null"),
        ({"sampels": 2}, "estimate.sampels = 2: unknown key (did you mean 'samples'?)"),
    ]:
        with pytest.raises(InputError) as error:
            from_mapping(EstimateSettings, section, "estimate")
        assert error.value.problem == problem


def test_nested_sections_are_checked_key_by_key():
    with pytest.raises(InputError) as error:
        validate_params({"profiles": {"tiny": {"train_obsnet": {"diffusion": {"beta_end": 1.5}}}}})
    assert error.value.problem == (
        "profiles.tiny.train_obsnet.diffusion.beta_end = 1.5: must be a number in (0, 1)"
    )
    with pytest.raises(InputError) as error:
        validate_params({"dataset": {"samples": {"drmnet": {"trian": 4}}}})
    assert error.value.problem == "dataset.samples.drmnet.trian = 4: unknown key (did you mean 'train'?)"
    with pytest.raises(InputError) as error:
        validate_params({"profile": "huge", "profiles": {"tiny": {}}})
    assert error.value.problem == "profile = 'huge': must be one of tiny"


@pytest.mark.parametrize("net", ["drmnet", "obsnet"])
def test_every_key_of_a_training_section_is_an_option_of_the_training_stage(net):
    import dataclasses

    from pipeline.settings import DRMNetTrainSettings, ObsNetTrainSettings
    from pipeline.training.stage import _loop_kwargs

    section = {"drmnet": DRMNetTrainSettings, "obsnet": ObsNetTrainSettings}[net]()
    kwargs, options = _loop_kwargs(net, section)  # raises TypeError for a field the stage does not know
    fields = {f.name for f in dataclasses.fields(section) if f.init}
    assert set(kwargs) | set(options) | {"batch_size", "num_workers", "shuffle_buffer", "diffusion"} >= fields
