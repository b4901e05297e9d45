"""Evaluation: the protocol spheres, relighting, the baselines, and the whole evaluation of a
registered model (test shards → metrics.json / per_sample.csv → MLflow → the champion alias)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from tiny_workspace import (
    RES,
    make_measured_test_data,
    make_test_data,
    run_cli,
    save_tiny_models,
    studio_envmap,
)

from pipeline.evaluation.methods import METHODS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_protocol_spheres_under_a_constant_envmap():
    """Under uniform light L a perfect mirror shows L everywhere and a Lambertian sphere of
    albedo ρ shows ρ·L (a convex sphere sees the whole upper hemisphere)."""
    from rendering.spheres import render_spheres, sphere_mask

    light = np.full((8, 16, 3), [2.0, 1.0, 0.5], dtype=np.float32)
    spheres = render_spheres(light, sphere_res=24, spp=32, seed=0)
    mask = sphere_mask(24)
    np.testing.assert_allclose(
        spheres["mirror"][mask], np.broadcast_to([2.0, 1.0, 0.5], (mask.sum(), 3)), rtol=1e-4
    )
    np.testing.assert_allclose(spheres["diffuse"][mask].mean(axis=0), [1.0, 0.5, 0.25], rtol=0.05)
    assert np.isfinite(spheres["matte_silver"]).all()


def test_mirror_sphere_is_seen_from_the_viewer_side():
    """The mirror sphere's centre reflects the direction toward the camera (+z, the envmap's
    centre column), its right side +x (u = 0.25) and its top +y (row 0)."""
    from rendering.envmap import pixel_directions
    from rendering.spheres import render_sphere

    directions = pixel_directions(32)
    envmap = np.clip(directions, 0, None).astype(np.float32)  # red = +x, green = +y, blue = +z
    image = render_sphere(envmap, "mirror", sphere_res=33, spp=4)
    assert np.argmax(image[16, 16]) == 2  # centre: +z
    assert np.argmax(image[16, 27]) == 0  # right: +x (reflected about a normal pointing right)
    assert np.argmax(image[5, 16]) == 1  # top: +y


def test_baselines_of_a_fully_observed_mirror_are_exact():
    """When the observed refmap is a complete mirror refmap, the "observed as mirror" baseline
    recovers the envmap: all its metrics are ~0 apart from the invalid rim."""

    from pipeline import metrics
    from pipeline.estimate import Estimation
    from pipeline.evaluation.methods import baseline_outputs
    from rendering.refmap import envmap_to_mirror, mirror_to_envmap

    envmap = studio_envmap(16)
    mirror = envmap_to_mirror(envmap, RES)
    recovered, valid = mirror_to_envmap(mirror, 16)
    ones = np.ones((RES, RES), bool)
    estimation = Estimation(
        observed=mirror, observed_mask=ones, completed=mirror[None], mirrors=mirror[None],
        materials=np.ones((1, 6), np.float32), envmaps=recovered[None], valid=valid,
        steps=np.zeros(1), converged=np.ones(1, bool),
    )  # fmt: skip
    outputs = baseline_outputs(estimation, 16)
    np.testing.assert_allclose(outputs["observed_mirror"].mirrors[0], mirror)
    assert metrics.si_rmse(outputs["observed_mirror"].mirrors[0], mirror, channel_axis=0) < 1e-6
    constant = outputs["constant_mean"].envmaps[0]
    np.testing.assert_allclose(constant, np.broadcast_to(mirror.mean(axis=(1, 2)), constant.shape), rtol=1e-6)


def test_the_protocol_tone_maps_an_estimate_at_the_truths_exposure_after_scale_alignment():
    """An estimate that is the truth in other units renders exactly the truth's spheres; one that
    is too dark in part of the map stays too dark after the mapping."""

    from pipeline import metrics
    from pipeline.evaluation.scoring import tonemapped_estimate, tonemapped_truth
    from pipeline.settings import EvaluateSettings

    envmap = studio_envmap(16)
    settings = EvaluateSettings.from_params({"sphere_res": 16, "sphere_spp": 4})
    truth = tonemapped_truth(envmap, 16, settings)
    assert truth["exposure"] == pytest.approx(metrics.tonemap_exposure(envmap))
    np.testing.assert_allclose(
        tonemapped_estimate(7.0 * envmap, truth), metrics.tonemap(envmap, truth["exposure"]), atol=1e-6
    )
    darker = envmap.copy()
    darker[:, :16] *= 0.25
    shown = tonemapped_estimate(darker, truth)
    assert (
        shown.max() <= 1.0
        and shown[:, :16].mean() < metrics.tonemap(envmap, truth["exposure"])[:, :16].mean()
    )


def test_summary_has_means_medians_and_a_group_per_envmap_kind():
    from pipeline.evaluation.results import group_counts, primary_group, summarize
    from pipeline.settings import EvaluateSettings

    def row(key, kind, value):
        return {"test_set": "principled", "key": key, "method": "drmnet", "envmap_id": f"{kind}-{key}",
                "envmap_kind": kind, "mirror_rel_si_rmse": value}  # fmt: skip

    rows = [row("a", "sky", 0.1), row("b", "sky", 0.2), row("c", "sky", 0.9), row("d", "real", 0.4)]
    summary = summarize(rows)
    assert list(summary) == ["principled", "principled/real", "principled/sky"]
    drmnet = summary["principled/sky"]["drmnet"]
    assert drmnet["mirror_rel_si_rmse"] == pytest.approx(0.4) and drmnet["mirror_rel_si_rmse_median"] == 0.2
    assert summary["principled"]["drmnet"]["mirror_rel_si_rmse_median"] == pytest.approx(0.3)
    assert group_counts(rows) == {"principled": 4, "principled/real": 1, "principled/sky": 3}
    settings = EvaluateSettings()  # primary group principled/real when there are real maps …
    assert primary_group(summary, settings) == "principled/real"
    assert primary_group(summarize(rows[:3]), settings) == "principled"  # … else the whole test set


def test_scoring_a_test_set_shows_samples_done_and_an_eta(monkeypatch):
    """One status line per sample when it is the only output (a log file, not a terminal), with
    the test set, samples done of all, and the time left; rows come back in sample order."""
    import io

    from pipeline.evaluation import scoring
    from pipeline.evaluation.test_sets import TestSample
    from pipeline.settings import EvaluateSettings

    def fake_sample(estimator, sample, settings, directory):
        return [{"test_set": sample.test_set, "key": sample.key, "method": "drmnet"}]

    monkeypatch.setattr(scoring, "evaluate_sample", fake_sample)
    empty = np.zeros((2, 2, 3), np.float32)
    samples = [
        TestSample("measured", f"m-{i}", empty, empty, np.ones((2, 2), bool), empty, np.zeros(6))
        for i in range(3)
    ]
    log = io.StringIO()
    rows = scoring.evaluate_test_set(None, samples, EvaluateSettings(), None, log)
    assert [row["key"] for row in rows] == ["m-0", "m-1", "m-2"]
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("evaluate measured: 0/3 samples") and "\r" not in log.getvalue()
    assert lines[-1].startswith("evaluate measured: 3/3 samples") and lines[-1].endswith("m-2")
    assert all("ETA" in line for line in lines)


def test_relight_renders_an_object_with_a_new_material(tmp_path, monkeypatch, capsys):

    from rendering.hdrio import read_hdr, write_exr

    write_exr(tmp_path / "light.exr", studio_envmap(16))
    args = ["relight", "--envmap", tmp_path / "light.exr", "--shape", "ellipsoid", "--material"]
    args += ["1,0.9,0.6,0.5,0.3,0.5", "--out", tmp_path / "relit.exr", "--preview", tmp_path / "relit.png"]
    code, output = run_cli([*args, "--object-res", 24, "--spp", 4], monkeypatch, capsys)
    assert code == 0, output
    image = read_hdr(tmp_path / "relit.exr")
    assert image.shape == (24, 24, 3) and np.isfinite(image).all() and image.max() > 0
    assert (tmp_path / "relit.png").stat().st_size > 0
    code, output = run_cli([*args[:-4], "--out", tmp_path / "relit.png"], monkeypatch, capsys)
    assert code == 2 and ".exr" in output
    code, output = run_cli([*args[:5], "2,0,0,0,0,0", "--out", tmp_path / "r.exr"], monkeypatch, capsys)
    assert code == 2 and "--material" in output


# -- the whole evaluation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, one_torch_thread):
    """Two registered DRMNet versions (with one registered ObsNet) evaluated one after the other,
    in an MLflow store of their own (working directory and tracking URI inside a temp dir)."""
    from pipeline.flows.evaluate import run_evaluation
    from pipeline.registry import register_model

    root = tmp_path_factory.mktemp("evaluation")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # mlartifacts/ lands here
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        params = make_test_data(root)  # principled test samples only: the measured set has shards of its own
        make_measured_test_data(root, params)
        drmnet_1, obsnet = save_tiny_models(root / "v1", seed=1)
        drmnet_2, _ = save_tiny_models(root / "v2", seed=2)
        versions = [register_model("drmnet", directory) for directory in (drmnet_1, drmnet_2)]
        register_model("obsnet", obsnet)
        params["evaluate"]["obsnet"] = "models:/obsnet@candidate"
        runs = []
        for version in versions:
            out = root / f"eval_v{version}"
            summary = run_evaluation(params, model=f"models:/drmnet/{version}", out_dir=out)
            runs.append({"version": version, "out": out, "summary": summary})
        yield {"root": root, "params": params, "runs": runs}


def test_evaluation_writes_metrics_for_every_method_and_test_set(evaluated):
    out = evaluated["runs"][0]["out"]
    summary = json.loads((out / "metrics.json").read_text())
    # The test envmaps are all studio maps: each test set and its one kind.
    assert set(summary) == {"principled", "principled/studio", "measured", "measured/studio"}
    for methods in summary.values():
        assert tuple(methods) == METHODS
        for method, values in methods.items():
            assert all(math.isfinite(v) for v in values.values()), method
            for sphere in ("mirror", "matte_silver", "diffuse"):
                assert values[f"{sphere}_si_rmse"] <= values[f"{sphere}_rmse"] + 1e-9
                assert 0.0 <= values[f"{sphere}_rel_si_rmse"] <= 1.0 + 1e-9
                assert 0.0 <= values[f"{sphere}_angular"] <= 180.0
                assert f"{sphere}_rel_si_rmse_median" in values
        assert 0.0 <= methods["drmnet"]["calibration"] <= 1.0 and methods["drmnet"]["spread"] >= 0.0
    with open(out / "per_sample.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * len(METHODS)  # one principled + one measured sample, every method
    assert {row["envmap_kind"] for row in rows} == {"studio"}
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["models"]["drmnet"]["version"] == evaluated["runs"][0]["version"]
    assert provenance["data"]["measured"]["source"] == str(evaluated["root"] / "shards" / "measured" / "test")
    gallery = sorted(p.parent.name for p in (out / "gallery").glob("*/*/gallery.json"))
    assert len(gallery) == 2
    assert provenance["counts"]["principled/studio"] == 1


def test_evaluation_reads_the_measured_set_from_its_shards_and_renders_nothing(
    evaluated, monkeypatch, tmp_path
):
    """The test shards hold no measured samples: evaluation reads the measured test set from the
    shards `drmnet render-dataset --dataset measured --split test` wrote, without rendering, and
    without them it says which command makes them."""
    import rendering.objects
    from pipeline.evaluation.test_sets import load_test_sets
    from pipeline.settings import EvaluateSettings
    from pipeline.shards import read_shard
    from rendering.errors import InputError

    def no_rendering(*args, **kwargs):
        raise AssertionError("evaluation rendered an object")

    monkeypatch.setattr(rendering.objects, "render_object", no_rendering)
    params = evaluated["params"]
    settings = EvaluateSettings.from_params(params["evaluate"])
    measured = load_test_sets(settings, params)["measured"]
    stored = dict(read_shard(evaluated["root"] / "shards" / "measured" / "test" / "measured-test-000000.tar"))
    assert [sample.key for sample in measured] == ["measured-0000-gold-like"] == list(stored)
    sample, record = measured[0], stored["measured-0000-gold-like"]
    assert sample.material_source == "gold-like" and np.array_equal(sample.image, record["image"])
    assert np.array_equal(sample.z, record["z_obs"])
    assert sample.shape == (record["shape"], record["shape_seed"])

    without = tmp_path / "shards"  # the test shards alone
    shutil.copytree(evaluated["root"] / "shards" / "drmnet", without / "drmnet")
    settings = EvaluateSettings.from_params({**params["evaluate"], "shards": str(without)})
    with pytest.raises(InputError, match="render-dataset --dataset measured --split test"):
        load_test_sets(settings, params)


def test_each_test_object_is_the_shape_its_sample_stores(evaluated):
    """Relighting uses the object of the sample's own record, not a shape re-planned from the
    params: params whose shape pool no longer matches the shards change nothing."""
    from pipeline.evaluation.test_sets import shard_test_samples
    from pipeline.settings import EvaluateSettings
    from pipeline.shards import read_shard

    params = evaluated["params"]
    settings = EvaluateSettings.from_params(params["evaluate"])
    stored = dict(read_shard(evaluated["root"] / "shards" / "drmnet" / "test" / "drmnet-test-000000.tar"))
    other_pool = {**params, "dataset": {**params["dataset"], "shapes": ["ellipsoid"], "seed": 7}}
    for given in (params, other_pool, None):
        shapes = {sample.key: sample.shape for sample in shard_test_samples(settings, given)}
        assert shapes == {key: (record["shape"], record["shape_seed"]) for key, record in stored.items()}
        assert {name for name, _ in shapes.values()} == {"blob"}


def test_the_oracle_scores_the_floor_of_every_method(evaluated):
    """The true mirror refmap through the same conversion is at least as good as every method
    on every sample, on the error measures that the conversion alone limits."""
    with open(evaluated["runs"][0]["out"] / "per_sample.csv") as stream:
        rows = list(csv.DictReader(stream))
    floors = ["refmap_rel_si_rmse", "refmap_log_lum_rmse", "envmap_log_rmse", "material_mae"]
    floors += [f"{sphere}_rel_si_rmse" for sphere in ("mirror", "matte_silver", "diffuse")]
    for key in {row["key"] for row in rows}:
        by_method = {row["method"]: row for row in rows if row["key"] == key}
        oracle = by_method.pop("oracle")
        assert float(oracle["refmap_rel_si_rmse"]) == 0.0 and float(oracle["material_mae"]) == 0.0
        for method, row in by_method.items():
            for metric in floors:
                assert float(oracle[metric]) <= float(row[metric]) + 1e-9, (key, method, metric)


def test_metrics_are_logged_and_champion_follows_the_primary_metric(evaluated):
    from pipeline.registry import _client

    client = _client()
    first, second = evaluated["runs"]
    decision_1 = json.loads((first["out"] / "champion.json").read_text())
    assert decision_1["promoted"] and decision_1["previous"] is None
    # No real maps in the test split: the primary group falls back to the whole principled set.
    value_1 = first["summary"]["principled"]["drmnet"]["mirror_rel_si_rmse"]
    value_2 = second["summary"]["principled"]["drmnet"]["mirror_rel_si_rmse"]
    assert decision_1["metric"] == "mirror_rel_si_rmse"
    decision_2 = json.loads((second["out"] / "champion.json").read_text())
    assert decision_2["promoted"] == (value_2 < value_1)
    champion = client.get_model_version_by_alias("drmnet", "champion").version
    assert str(champion) == (second["version"] if value_2 < value_1 else first["version"])
    assert str(client.get_model_version_by_alias("obsnet", "champion").version) == "1"  # the pair evaluated

    run = client.get_run(client.get_model_version("drmnet", first["version"]).run_id)
    assert run.data.metrics["eval.principled.drmnet.mirror_rel_si_rmse"] == pytest.approx(value_1)
    assert "eval.principled/studio.oracle.mirror_rel_si_rmse_median" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/per_sample.csv"} <= artifacts


def test_evaluating_a_model_version_that_does_not_exist_is_an_input_error(evaluated):
    from pipeline.flows.evaluate import run_evaluation
    from rendering.errors import InputError

    with pytest.raises(InputError, match="drmnet/99"):
        run_evaluation(evaluated["params"], model="models:/drmnet/99", out_dir=evaluated["root"] / "nope")
