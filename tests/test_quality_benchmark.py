"""benchmarks/quality.py on a tiny untrained model and procedural envmaps: it picks the envmaps
of the asked kinds, scores every row of every item, and ends with the headline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tiny_workspace import save_tiny_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_envmaps_are_chosen_by_kind(tmp_path, quality):
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = tmp_path / "test"
    split.mkdir()
    ids, kinds = ["real-attic", "sky-0-1", "studio-0-2"], ["real", "sky", "studio"]
    pq.write_table(pa.table({"id": ids, "kind": kinds}), split / "envmaps.parquet")
    assert quality.select_envmaps(split) == [("real-attic", "real", split / "real-attic.exr")]
    assert [i for i, _, _ in quality.select_envmaps(split, "sky,studio")] == ["sky-0-1", "studio-0-2"]
    assert len(quality.select_envmaps(split, "all")) == 3


def test_benchmark_scores_every_item_and_ends_with_the_headline(tmp_path, quality):
    from models.estimator import Estimator
    from rendering.procedural_envmaps import make_envmap

    drmnet, _ = save_tiny_models(tmp_path / "models")
    estimator = Estimator.from_directories(drmnet, device="cpu")
    envmaps = [
        ("sky-0-0", "sky", make_envmap("sky", 1, 16)),
        ("studio-0-1", "studio", make_envmap("studio", 3, 16)),
    ]
    result = quality.run_benchmark(estimator, envmaps, items=2, samples=2, spp=4, seed=0)

    assert len(result["rows"]) == 2 * 2 * len(quality.METHODS)
    for row in result["rows"]:
        assert 0.0 <= row["rel_si_rmse"] <= 1.0 + 1e-9 and np.isfinite(row["log_lum_rmse"])
    observation = result["summary"]["observation"]["rel_si_rmse"]
    assert observation["won"] == 0.0  # the baseline never beats itself
    assert [m["envmap_id"] for m in result["maps"]] == ["sky-0-0", "studio-0-1"]
    headline = result["headline"]
    assert headline["items"] == 4 and headline["maps"] == 2 and 0 <= headline["items_won"] <= 4
    lines = quality.report_lines(result)
    assert lines[-1].startswith("gain over the observation-as-mirror baseline: ")
    assert lines[-1].endswith(f"won {headline['items_won']} of 4 items / {headline['maps_won']} of 2 maps")
    assert lines[-2].startswith("95 % interval of the gains") and "log luminance" in lines[-2]

    # A map's items depend on the seed and its id, not on which other maps run beside it.
    alone = quality.run_benchmark(estimator, envmaps[1:], items=2, samples=2, spp=4, seed=0)
    assert alone["maps"][0]["rel_si_rmse"] == result["maps"][1]["rel_si_rmse"]


def test_gain_interval_is_the_paired_bootstrap_spread(quality):
    model, baseline = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 4.0, 8.0])
    assert quality.gain_interval(baseline, baseline) == [0.0, 0.0]  # the baseline itself: no gain
    # A constant ratio survives every resampling: the interval is that one gain.
    np.testing.assert_allclose(quality.gain_interval(0.5 * baseline, baseline), [0.5, 0.5])
    low, high = quality.gain_interval(model, baseline)
    point = 1.0 - model.mean() / baseline.mean()  # 0.375
    assert low < point < high
    # Every resample mean lies between the items' best and worst ratios (1 − 1/2 … 1 − 1/1).
    assert 0.0 <= low and high <= 0.5
