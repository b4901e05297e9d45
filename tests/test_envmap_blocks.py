"""Samples in envmap blocks: many samples in one render call give the bytes each would alone;
real/procedural mixing by exact proportion; augmentation deterministic, recorded and exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.samples import (
    DatasetSettings,
    augmented_envmap,
    draw_envmap,
    make_sample,
    make_samples,
    plan_sample,
)
from pipeline.shards import encode_sample, sample_key
from rendering.procedural_envmaps import make_envmap

IDS = ["sky-0-00000", "studio-0-00001", "real-sky", "real-park", "user-hall"]
AUGMENT = {"flip": 0.5, "tilt_deg": 10, "exposure_stops": 1, "tint": 0.1}


def settings(**changes) -> DatasetSettings:
    base = DatasetSettings(
        refmap_res=8,
        spp=8,
        samples={"drmnet": {"train": 64}},
        envmap_block=4,
        real_fraction={"train": 0.5},
        augmentation=AUGMENT,
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def envmap() -> np.ndarray:
    return make_envmap("sky", 5, 16)


def test_one_render_call_for_a_block_gives_each_sample_its_own_bytes(envmap):
    chosen = settings()
    for first in (0, 8):  # a procedural block and a file-map block (flipped, tilted, tinted)
        plans = [plan_sample(chosen, "drmnet", "train", i, IDS) for i in range(first, first + 4)]
        assert len({plan.envmap_draw for plan in plans}) == 1
        block_envmap = augmented_envmap(envmap, plans[0].envmap_draw)
        batch = make_samples(plans, block_envmap, chosen)
        part = make_samples(plans[2:], block_envmap, chosen)  # another batch composition
        for plan, sample in zip(plans, batch, strict=True):
            alone = make_sample(plan, envmap, chosen)
            key = sample_key("drmnet", "train", plan.index)
            assert encode_sample(key, sample) == encode_sample(key, alone)
        for plan, sample in zip(plans[2:], part, strict=True):
            key = sample_key("drmnet", "train", plan.index)
            assert encode_sample(key, sample) == encode_sample(key, batch[plans.index(plan)])


def test_file_maps_take_exactly_the_configured_share_of_blocks():
    for fraction in (0.0, 0.25, 0.5, 0.8):
        chosen = settings(real_fraction={"train": fraction})
        draws = [draw_envmap(chosen, "train", block * 4, IDS) for block in range(40)]
        on_files = sum(d.envmap_id.startswith(("real-", "user-")) for d in draws)
        assert on_files == round(40 * fraction)
    # Each group is used in turn: 20 file blocks cycle evenly through the 3 file maps.
    draws = [draw_envmap(settings(), "train", block * 4, IDS).envmap_id for block in range(40)]
    counts = {i: draws.count(i) for i in IDS[2:]}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_augmentation_only_touches_file_maps_of_the_listed_splits_and_is_recorded(envmap):
    chosen = settings()
    plans = [plan_sample(chosen, "drmnet", "train", i, IDS) for i in range(64)]
    procedural = [p for p in plans if not p.envmap_id.startswith(("real-", "user-"))]
    files = [p for p in plans if p.envmap_id.startswith(("real-", "user-"))]
    assert all(p.gain == (1.0, 1.0, 1.0) and not p.flip and p.tilt == 0 for p in procedural)
    assert len({p.gain for p in files}) == len(files)  # exposure and tint per sample
    assert any(p.flip for p in files) and any(not p.flip for p in files)
    assert all(abs(np.degrees(p.tilt)) <= 10 for p in files)
    test_plan = plan_sample(chosen, "drmnet", "test", 8, IDS)
    assert test_plan.gain == (1.0, 1.0, 1.0) and not test_plan.flip  # only train is augmented
    sample = make_sample(files[0], envmap, chosen)
    assert sample["aug_gain"] == list(files[0].gain) and sample["aug_flip"] == files[0].flip


def test_exposure_and_tint_scale_the_rendered_refmaps_exactly(envmap):
    chosen = settings()
    plan = next(
        p for p in (plan_sample(chosen, "drmnet", "train", i, IDS) for i in range(64)) if p.gain != (1, 1, 1)
    )
    plain = make_sample(replace(plan, gain=(1.0, 1.0, 1.0)), envmap, chosen)
    tinted = make_sample(plan, envmap, chosen)
    for field in ("refmap_obs", "refmap_k", "refmap_next", "refmap_mirror"):
        expected = plain[field] * np.asarray(plan.gain, np.float32)[:, None, None]
        np.testing.assert_allclose(tinted[field], expected, rtol=1e-6)
