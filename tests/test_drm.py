"""The DRM process: the schedule of DESIGN.md §3.4, the intensity normalisation and transform,
and the sampler's per-sample stopping rule, checked on real (tiny) networks."""

from __future__ import annotations

import math

import pytest
import torch

from models.config import DRMConfig, UNetConfig
from models.drm import (
    dark_weights,
    drm_loss,
    from_network,
    intensity_scale,
    inverse_transform,
    luminance,
    material_at,
    schedule_length,
    to_network,
    transform,
)
from models.illnet import IllNet
from models.refnet import RefNet
from models.sampler import sample_drm

CONFIG = DRMConfig()
Z0 = torch.tensor(CONFIG.z0)
NET = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(8,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_schedule_length_matches_the_formula():
    z_K = torch.rand(200, 6, generator=torch.Generator().manual_seed(0))
    K = schedule_length(z_K, CONFIG)
    for z, k in zip(z_K, K, strict=True):
        distance = float((z - Z0).norm())
        expected = max(1, math.floor(math.log(CONFIG.eps / distance) / math.log(CONFIG.gamma)) + 2)
        assert int(k) == expected


def test_schedule_reaches_the_mirror_at_k0_and_not_before():
    """‖z_0 − z0‖ < ε (the sampler's stopping rule holds at k = 0) but ‖z_1 − z0‖ ≥ ε."""
    z_K = torch.rand(500, 6, generator=torch.Generator().manual_seed(1))
    K = schedule_length(z_K, CONFIG)
    zero = torch.zeros_like(K)
    assert ((material_at(z_K, zero, K, CONFIG) - Z0).norm(dim=1) < CONFIG.eps).all()
    several = K > 1
    one = torch.ones_like(K)
    assert ((material_at(z_K, one, K, CONFIG) - Z0).norm(dim=1)[several] >= CONFIG.eps).all()


def test_mirror_and_near_mirror_materials_take_one_step():
    z_K = torch.stack([Z0, Z0 + 0.001])
    assert schedule_length(z_K, CONFIG).tolist() == [1, 1]


def test_material_schedule_starts_at_the_observation_and_moves_toward_the_mirror():
    z_K = torch.rand(64, 6, generator=torch.Generator().manual_seed(2))
    K = schedule_length(z_K, CONFIG)
    assert torch.allclose(material_at(z_K, K - 1, K, CONFIG), z_K)
    k = torch.clamp(K - 1 - torch.randint(0, 40, (64,)), min=1)
    closer = (material_at(z_K, k - 1, K, CONFIG) - Z0).norm(dim=1)
    farther = (material_at(z_K, k, K, CONFIG) - Z0).norm(dim=1)
    assert (closer < farther).all()
    # Each step shrinks the distance to the mirror by exactly γ.
    assert torch.allclose(closer / farther, torch.full_like(closer, CONFIG.gamma))


def test_intensity_normalisation_sets_the_geometric_mean_and_is_undone():
    brightness = torch.tensor([1.0, 50.0, 0.01]).view(3, 1, 1, 1)
    refmap = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * brightness
    refmap[:, :, :4] = 0.0  # unobserved / black pixels do not count
    scale = intensity_scale(refmap, CONFIG)
    lum = luminance(refmap * scale.view(-1, 1, 1, 1))
    for image in lum:
        geomean = torch.exp(torch.log(image[image > 0]).mean())
        assert geomean == pytest.approx(CONFIG.target_geomean, rel=1e-4)
    assert torch.allclose(from_network(to_network(refmap, scale), scale), refmap, rtol=1e-4, atol=1e-6)


def test_transform_round_trip():
    x = torch.logspace(-4, 4, 50)
    assert torch.allclose(inverse_transform(transform(x)), x, rtol=1e-5)
    assert transform(torch.tensor(0.9)) == pytest.approx(1.0)


def test_loss_offset_weighs_errors_as_the_log_of_x_plus_the_offset():
    # Two pixels, one dark and one bright, each off by the same amount in log10(x + offset):
    # with the weights their squared errors count the same, whereas the plain L2 in T lets the
    # dark one count for far less (T is log10(x + 0.1), nearly linear below 0.1).
    offset, step = 0.01, 1e-3
    x = torch.tensor([0.003, 2.0]).view(1, 1, 1, 2)
    target = transform(x)
    estimate = transform(10 ** (torch.log10(x + offset) + step) - offset)
    squared = (estimate - target) ** 2
    weighted = dark_weights(target, offset) * squared
    assert weighted[..., 0].item() == pytest.approx(weighted[..., 1].item(), rel=0.02)
    assert squared[..., 0].item() < 0.1 * squared[..., 1].item()
    # offset 0.1 is the networks' own domain: every weight 1, the same loss as the plain L2
    assert torch.equal(dark_weights(target, 0.1), torch.ones_like(target))
    z = torch.zeros(1, 6)
    plain, _ = drm_loss(estimate, target, z, z, z, z)
    same, _ = drm_loss(estimate, target, z, z, z, z, dark_weights(target, 0.1))
    assert same.item() == pytest.approx(plain.item(), rel=1e-6)


def _refnet_with_output_bias(bias: torch.Tensor, weight_scale: float) -> RefNet:
    """A real RefNet whose final layer is set by hand: bias fixes the mean output (the head is
    linear), weight_scale how much the output depends on the refmap."""
    torch.manual_seed(0)
    refnet = RefNet(NET, 16).eval()
    final = refnet.encoder.out[-1]
    with torch.no_grad():
        final.weight.mul_(weight_scale)
        final.bias.copy_(bias)
    return refnet


def test_sampler_steps_follow_the_schedule_of_refnets_estimate():
    """A RefNet that always answers z_K: every sample takes exactly K IllNet steps, the K − 1 steps
    of the schedule plus the noise-free last one at ẑ_0 (as the paper's released code does)."""
    z_K = torch.tensor([0.9, 0.8, 0.85, 0.9, 0.2, 0.95])
    refnet = _refnet_with_output_bias(z_K, weight_scale=0.0)
    illnet = IllNet(NET, 16).eval()
    observation = transform(torch.rand(3, 3, 16, 16))
    K = int(schedule_length(z_K[None], CONFIG))
    out = sample_drm(illnet, refnet, observation, CONFIG, torch.Generator().manual_seed(0))
    assert out.steps.tolist() == [K] * 3
    assert out.converged.all()
    assert torch.allclose(out.material, z_K.expand(3, 6), atol=1e-6)

    gen = torch.Generator().manual_seed(0)
    capped = sample_drm(illnet, refnet, observation, CONFIG, gen, max_steps=K // 2)
    assert capped.steps.tolist() == [K // 2] * 3
    assert not capped.converged.any()


def _networks_whose_samples_stop_at_different_steps() -> tuple[IllNet, RefNet, torch.Tensor]:
    """IllNet, a RefNet whose answer depends on the refmap, and six observations (T domain) of
    very different brightness: with 50 steps at most, four converge (after 39–46 steps), two not."""
    refnet = _refnet_with_output_bias(torch.tensor([0.97, 0.97, 0.97, 0.97, 0.03, 0.97]), weight_scale=0.15)
    illnet = IllNet(NET, 16).eval()
    gen = torch.Generator().manual_seed(5)
    brightness = torch.logspace(-2, 2, 6).view(6, 1, 1, 1)
    return illnet, refnet, transform(torch.rand(6, 3, 16, 16, generator=gen) * brightness)


def test_sampler_stops_each_sample_on_its_own():
    """Real networks whose RefNet answer depends on the refmap: every sample's step count is the
    first step at which its own estimate satisfies ‖ẑ_k − z0‖ < ε, whatever the others do."""
    illnet, refnet, observation = _networks_whose_samples_stop_at_different_steps()
    out = sample_drm(
        illnet,
        refnet,
        observation,
        CONFIG,
        torch.Generator().manual_seed(1),
        max_steps=50,
        keep_intermediates=True,
    )
    assert len(set(out.steps.tolist())) > 1, "the test needs samples that stop at different steps"
    assert (out.steps <= 50).all()
    with torch.no_grad():
        for b in range(6):
            steps = int(out.steps[b])
            for i in range(steps):  # intermediates[i]: the state RefNet saw before step i + 1
                state = out.intermediates[i][b : b + 1]
                z = refnet(state, observation[b : b + 1], torch.tensor([i]))[0].clamp(0, 1)
                stops = float((CONFIG.gamma**i * (z - Z0)).norm()) < CONFIG.eps
                assert stops == (i == steps - 1) or (i == steps - 1 == 49 and not out.converged[b])
            assert torch.equal(out.intermediates[-1][b], out.mirror[b])


def test_sampler_progress_reports_each_step_and_the_samples_still_running():
    illnet, refnet, observation = _networks_whose_samples_stop_at_different_steps()
    calls = []
    out = sample_drm(
        illnet,
        refnet,
        observation,
        CONFIG,
        torch.Generator().manual_seed(1),
        max_steps=50,
        progress=lambda *args: calls.append(args),
    )
    assert out.converged.any() and not out.converged.all(), "the test needs both kinds of samples"
    # Once per step actually taken, never more than max_steps times.
    assert [step for step, _, _ in calls] == list(range(1, int(out.steps.max()) + 1))
    assert len(calls) <= 50 and {total for _, total, _ in calls} == {50}
    running = [r for _, _, r in calls]
    assert all(a >= b for a, b in zip(running, running[1:], strict=False)) and len(set(running)) > 2
    assert running[-1] == int((~out.converged).sum())
    # After step s: the samples that go on to a further step, or that the step limit stops unconverged.
    for step, _, count in calls:
        still = (out.steps > step) | ((out.steps == step) & ~out.converged)
        assert count == int(still.sum())


def test_sampler_is_reproducible_with_a_seeded_generator():
    refnet = _refnet_with_output_bias(torch.tensor([0.9, 0.8, 0.85, 0.9, 0.2, 0.95]), weight_scale=1.0)
    illnet = IllNet(NET, 16).eval()
    observation = transform(torch.rand(2, 3, 16, 16))
    a = sample_drm(illnet, refnet, observation, CONFIG, torch.Generator().manual_seed(7), max_steps=10)
    b = sample_drm(illnet, refnet, observation, CONFIG, torch.Generator().manual_seed(7), max_steps=10)
    c = sample_drm(illnet, refnet, observation, CONFIG, torch.Generator().manual_seed(8), max_steps=10)
    assert torch.equal(a.mirror, b.mirror)
    assert not torch.equal(a.mirror, c.mirror)
