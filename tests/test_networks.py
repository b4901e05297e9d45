"""The networks, their files and the Estimator: shapes for every profile of params.yaml,
conditioning on the embeddings, file round trips, and reproducible stochastic estimates."""

from __future__ import annotations

import pytest
import torch

from models.config import DRMNetConfig, ObsNetConfig, UNetConfig, drmnet_config, obsnet_config
from models.ddpm import log_stats
from models.estimator import Estimator
from models.weights import CONFIG_FILE, WEIGHTS_FILE, build_networks, save_config, save_weights
from pipeline.config import load_params, profile_params

NET = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(8,))
R = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _randomise(nets: dict[str, torch.nn.Module], seed: int = 0) -> None:
    """Give the zero-initialised output layers weights, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in nets.values():
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("profile", ["tiny", "small", "paper"])
def test_every_profile_builds_networks_with_the_right_shapes(profile):
    """Built on the meta device: no memory, no compute, but every layer's shapes are checked."""
    params = load_params()
    block = profile_params(params, profile)
    drm, obs = drmnet_config(block, params.get("drm")), obsnet_config(block)
    r = block["refmap_res"]
    with torch.device("meta"):
        nets = {**build_networks(drm), **build_networks(obs)}
        refmap, batch = torch.empty(2, 3, r, r), 2
        assert nets["illnet"](refmap, refmap, torch.empty(batch, 6)).shape == (batch, 3, r, r)
        assert nets["refnet"](refmap, refmap, torch.zeros(batch, dtype=torch.long)).shape == (batch, 6)
        condition = torch.empty(batch, 4, r, r)
        t = torch.zeros(batch, dtype=torch.long)
        assert nets["obsnet"](refmap, condition, t).shape == (batch, 3, r, r)
    sizes = {name: _count(net) for name, net in nets.items()}
    if profile == "tiny":
        assert all(1_000 <= n <= 100_000 for n in sizes.values()), sizes
    if profile == "small":
        assert all(500_000 <= n <= 10_000_000 for n in sizes.values()), sizes


def test_networks_respond_to_their_embedding():
    torch.manual_seed(0)
    nets = {**build_networks(DRMNetConfig(R, NET, NET)), **build_networks(ObsNetConfig(R, NET))}
    _randomise(nets)
    x = torch.rand(2, 3, R, R)
    with torch.no_grad():
        dz = torch.tensor([[0.0] * 6, [0.5, 0.2, 0.1, 0.3, 0.6, 0.2]])
        ill = nets["illnet"](x[:1].expand(2, -1, -1, -1), x[:1].expand(2, -1, -1, -1), dz)
        assert not torch.allclose(ill[0], ill[1])
        ref = nets["refnet"](x[:1].expand(2, -1, -1, -1), x[:1].expand(2, -1, -1, -1), torch.tensor([0, 40]))
        assert ref.shape == (2, 6) and not torch.allclose(
            ref[0], ref[1]
        )  # linear head, clamped when sampling
        cond = torch.rand(1, 4, R, R).expand(2, -1, -1, -1)
        eps = nets["obsnet"](x[:1].expand(2, -1, -1, -1), cond, torch.tensor([3, 900]))
        assert not torch.allclose(eps[0], eps[1])


def test_resolution_must_suit_the_depth():
    with pytest.raises(ValueError, match="not divisible"):
        build_networks(DRMNetConfig(18, UNetConfig(8, (1, 2, 2), 1, ()), NET))


def _estimator(seed: int = 0) -> Estimator:
    torch.manual_seed(seed)
    drm, obs = DRMNetConfig(R, NET, NET), ObsNetConfig(R, NET)
    nets = {**build_networks(drm), **build_networks(obs)}
    _randomise(nets, seed)
    return Estimator(drm, nets["illnet"], nets["refnet"], obs, nets["obsnet"], device="cpu")


def test_estimator_samples_are_stochastic_and_reproducible():
    est = _estimator()
    refmap = torch.rand(2, 3, R, R) * 5
    a = est.estimate(refmap, num_samples=3, seed=1, max_steps=5)
    b = est.estimate(refmap, num_samples=3, seed=1, max_steps=5)
    c = est.estimate(refmap, num_samples=3, seed=2, max_steps=5)
    assert a.mirror.shape == (2, 3, 3, R, R) and a.material.shape == (2, 3, 6) and a.steps.shape == (2, 3)
    assert torch.equal(a.mirror, b.mirror) and torch.equal(a.material, b.material)
    assert not torch.equal(a.mirror, c.mirror)
    assert not torch.allclose(a.mirror[:, 0], a.mirror[:, 1])  # N samples of one input differ
    assert (a.mirror >= 0).all() and torch.isfinite(a.mirror).all()


def test_estimate_is_in_the_observations_own_scale():
    """Intensity normalisation is undone: 10× brighter input, same noise → 10× brighter mirror."""
    est = _estimator()
    refmap = torch.rand(1, 3, R, R) + 0.1
    a = est.estimate(refmap, num_samples=2, seed=3, max_steps=4)
    b = est.estimate(10 * refmap, num_samples=2, seed=3, max_steps=4)
    assert torch.allclose(b.mirror, 10 * a.mirror, rtol=1e-3, atol=1e-5)
    assert torch.equal(a.steps, b.steps)


def test_sparse_observations_are_completed_keeping_observed_pixels():
    est = _estimator()
    refmap = torch.rand(1, 3, R, R) + 0.1
    mask = torch.zeros(1, 1, R, R)
    mask[..., 4:12, 2:10] = 1.0
    out = est.estimate(refmap * mask, mask, num_samples=2, seed=0, max_steps=2, sampling_steps=5)
    seen = (mask > 0).expand(1, 3, R, R)[0]
    for sample in out.completed[0]:
        assert torch.equal(sample[seen], refmap[0][seen])
        assert (sample[~seen] > 0).any()  # the holes are filled
    assert not torch.equal(out.completed[0, 0], out.completed[0, 1])


def test_log_normalisation_maps_observed_pixels_to_unit_range_and_back():
    refmap = torch.rand(2, 3, R, R) * torch.tensor([1.0, 100.0]).view(2, 1, 1, 1)
    mask = (torch.rand(2, 1, R, R) > 0.5).float()
    stats = log_stats(refmap * mask, mask)
    norm = stats.normalise(refmap)
    seen = (mask > 0).expand_as(refmap)
    assert norm[seen].min() == pytest.approx(-1.0, abs=1e-5)
    assert norm[seen].max() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(stats.denormalise(norm), refmap, rtol=1e-4, atol=1e-5)


def test_model_files_round_trip(tmp_path):
    est = _estimator(seed=4)
    drm_dir, obs_dir = tmp_path / "drmnet", tmp_path / "obsnet"
    save_config(drm_dir / CONFIG_FILE, est.drmnet_config)
    save_weights(drm_dir / WEIGHTS_FILE, {"illnet": est.illnet, "refnet": est.refnet})
    save_config(obs_dir / CONFIG_FILE, est.obsnet_config)
    save_weights(obs_dir / WEIGHTS_FILE, {"obsnet": est.obsnet})
    loaded = Estimator.from_directories(drm_dir, obs_dir, device="cpu")
    assert loaded.drmnet_config == est.drmnet_config and loaded.obsnet_config == est.obsnet_config
    refmap, mask = torch.rand(1, 3, R, R), (torch.rand(1, 1, R, R) > 0.3).float()
    a = est.estimate(refmap, mask, num_samples=2, seed=5, max_steps=3, sampling_steps=4)
    b = loaded.estimate(refmap, mask, num_samples=2, seed=5, max_steps=3, sampling_steps=4)
    assert torch.equal(a.mirror, b.mirror) and torch.equal(a.completed, b.completed)
    with pytest.raises(ValueError, match="expected drmnet"):
        Estimator.from_directories(obs_dir)


def test_estimator_rejects_refmaps_of_another_resolution():
    with pytest.raises(ValueError, match=f"{R}×{R} model"):
        _estimator().estimate(torch.rand(3, 2 * R, 2 * R))


def test_a_known_material_replaces_refnet_and_sets_the_schedule():
    """A probe of known material: RefNet is never run, every sample keeps that material, and the
    process takes the steps its schedule gives (a rougher material, more steps)."""
    from models.drm import schedule_length

    est = _estimator()

    class NoRefNet(torch.nn.Module):
        def forward(self, *args):
            raise AssertionError("RefNet ran although the material is known")

    est.refnet = NoRefNet()
    refmap = torch.rand(2, 3, R, R) + 0.1
    known = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.6, 0.5], [1.0, 0.9, 0.9, 0.9, 0.1, 1.0]])
    out = est.estimate(refmap, num_samples=2, seed=0, material=known)
    assert torch.equal(out.material, known[:, None].expand(2, 2, 6))
    assert out.converged.all()
    expected = schedule_length(known, est.drmnet_config.drm)
    assert torch.equal(out.steps, expected[:, None].expand(2, 2))
    assert out.steps[0, 0] > out.steps[1, 0] > 0
    one = est.estimate(refmap[:1], num_samples=1, seed=0, material=known[0])  # (6,): every input
    assert torch.equal(one.material[0, 0], known[0])


@pytest.mark.parametrize(
    "material, problem",
    [
        (torch.full((5,), 0.5), "shape"),
        (torch.full((6,), 1.5), r"\[0, 1\]"),
        (torch.full((6,), float("nan")), "finite"),
    ],
)
def test_estimator_rejects_a_bad_known_material(material, problem):
    with pytest.raises(ValueError, match=problem):
        _estimator().estimate(torch.rand(3, R, R), material=material)
