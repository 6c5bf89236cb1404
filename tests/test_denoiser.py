"""The guided denoiser (stage 3 network); its targets, loss and sampler are in test_diffusion.py."""
from __future__ import annotations

import itertools

import pytest
import torch
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

from msgldm_auto.diffusion.targets import diffusion_loss_mask, masked_diffusion_loss
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.networks.denoiser import GuidedDenoiser, availability_label, unet_skip_shapes
from msgldm_auto.plans import Ablations, ConfigurationPlan, DiffusionPlan, DisentanglerPlan, UNetPlan


def brats_like(**ablations) -> ConfigurationPlan:
    """BraTS topology shrunk: 4 modalities, f = 8, 64² images -> 8² latents, 3 UNet levels, 2.5D context."""
    return ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=[64, 64], latent_scale=8, context_slices=3, batch_size=2,
        unet=UNetPlan(channels=[16, 32, 32], attention_levels=[False, True, True], num_head_channels=16,
                      norm_num_groups=8),
        disentangler=DisentanglerPlan(prior_channels=16, style_dim=8),
        ablations=Ablations(**ablations),
    )


def wmh_like(**ablations) -> ConfigurationPlan:
    """Two modalities (T1, FLAIR), f = 4, ε-prediction, two resnets per level."""
    return ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=[32, 32], latent_scale=4, context_slices=3, batch_size=2,
        unet=UNetPlan(channels=[16, 32], attention_levels=[False, True], num_res_blocks=2, num_head_channels=8,
                      norm_num_groups=8),
        disentangler=DisentanglerPlan(prior_channels=8, style_dim=4),
        diffusion=DiffusionPlan(prediction_type="epsilon", target="latent"),
        ablations=Ablations(**ablations),
    )


def tiny_cpu(**ablations) -> ConfigurationPlan:
    """The CPU preset's shape: no 2.5D context, no attention levels, very narrow."""
    return ConfigurationPlan(
        slice_axis=2, spacing=[2.0, 2.0], image_size=[32, 32], latent_scale=8, context_slices=1, batch_size=2,
        unet=UNetPlan(channels=[8, 16], attention_levels=[False, False], num_head_channels=8, norm_num_groups=4),
        disentangler=DisentanglerPlan(prior_channels=8, style_dim=8),
        ablations=Ablations(**ablations),
    )


PLANS = {"brats_like": (brats_like, 4), "wmh_like": (wmh_like, 2), "tiny_cpu": (tiny_cpu, 4)}


def all_patterns(m: int) -> torch.Tensor:
    """Every kept mask that keeps at least one modality and drops at least one: (2^M - 2, M)."""
    rows = [p for p in itertools.product([False, True], repeat=m) if any(p) and not all(p)]
    return torch.tensor(rows)


def make_inputs(config: ConfigurationPlan, m: int, kept: torch.Tensor, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, latent, (h, w) = kept.shape[0], config.autoencoder.latent_channels, config.latent_size
    shape = (b, m, latent, h, w)
    c = config.context_slices
    return dict(
        noisy=torch.randn(shape, generator=g),
        timesteps=torch.randint(0, 1000, (b,), generator=g),
        clean=torch.randn(shape, generator=g),
        kept=kept,
        neighbours=torch.randn(b, m, c - 1, latent, h, w, generator=g) if c > 1 else None,
        prior=torch.randn(b, config.disentangler.prior_channels, h, w, generator=g),
        one_pass=torch.randn(shape, generator=g),
        styles=torch.randn(b, m, config.disentangler.style_dim, generator=g),
    )


def wake_up(net: torch.nn.Module, keep_zero: str | None = "guidance.", seed: int = 1) -> None:
    """Give MONAI's zero-initialised layers (output conv, resnet conv2, attention proj_out) small random weights,
    as after some training, so that every input can reach the output. Parameters under `keep_zero` stay as they are."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if not (keep_zero and name.startswith(keep_zero)) and parameter.abs().sum() == 0:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=g))


def build(factory, m: int, seed: int = 0, **ablations) -> tuple[ConfigurationPlan, GuidedDenoiser]:
    torch.manual_seed(seed)
    config = factory(**ablations)
    return config, GuidedDenoiser(config, m)


@pytest.mark.parametrize("plan", PLANS)
def test_forward_backward_under_every_availability_pattern(plan):
    factory, m = PLANS[plan]
    config, net = build(factory, m)
    kept = all_patterns(m)
    inputs = make_inputs(config, m, kept)
    out = net(**inputs)
    assert out.shape == inputs["noisy"].shape
    present = torch.ones_like(kept)
    loss = masked_diffusion_loss(out, torch.randn_like(out), diffusion_loss_mask(present, kept))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # MONAI zero-initialises the output conv, so at init the gradient reaches exactly that layer.
    assert net.unet.out[2].conv.weight.grad.abs().sum() > 0
    assert net.unet.in_channels == net.in_channels


def test_availability_label_is_the_pattern_code():
    kept = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, True, True]])
    assert availability_label(kept).tolist() == [1 + 4, 8, 15]


@pytest.mark.parametrize("plan", PLANS)
def test_non_kept_modalities_have_exactly_zero_influence(plan):
    factory, m = PLANS[plan]
    config, net = build(factory, m)
    wake_up(net, keep_zero=None)  # adapters too: every path live
    kept = all_patterns(m)
    inputs = make_inputs(config, m, kept)
    with torch.no_grad():
        reference = net(**inputs)
        changed = dict(inputs)
        dropped = ~kept[:, :, None, None, None]
        changed["clean"] = torch.where(dropped, torch.full_like(inputs["clean"], float("nan")), inputs["clean"])
        # Kept modalities' noisy channels are replaced by their clean latent in the default (non-replacement) model.
        changed["noisy"] = torch.where(~dropped, 1e3 * torch.randn_like(inputs["noisy"]), inputs["noisy"])
        if inputs["neighbours"] is not None:
            changed["neighbours"] = torch.where(dropped[..., None], 7.0, inputs["neighbours"])
        assert torch.equal(net(**changed), reference)
        # Positive control: a kept modality's clean latent does matter.
        control = dict(inputs, clean=inputs["clean"] + 1.0)
        assert not torch.allclose(net(**control), reference)


@pytest.mark.parametrize("plan", PLANS)
def test_guidance_tensors_match_the_unet_skips(plan):
    factory, m = PLANS[plan]
    config, net = build(factory, m)
    kept = all_patterns(m)[:2]
    inputs = make_inputs(config, m, kept)
    unet = net.unet
    # Replay MONAI's own down path to collect the real skip tensors and the mid-block output.
    x = net._input_channels(inputs["noisy"], inputs["clean"], kept, inputs["neighbours"], inputs["prior"],
                            inputs["one_pass"])
    emb = unet.time_embed(get_timestep_embedding(inputs["timesteps"], unet.block_out_channels[0]))
    emb = emb + unet.class_embedding(availability_label(kept))
    context = net._style_tokens(inputs["styles"])
    h = unet.conv_in(x)
    skips = [h]
    for block in unet.down_blocks:
        h, residuals = block(hidden_states=h, temb=emb, context=context)
        skips += residuals
    mid = unet.middle_block(hidden_states=h, temb=emb, context=context)
    down, mid_guidance = net.guidance(inputs["prior"])
    assert [tuple(g.shape) for g in down] == [tuple(s.shape) for s in skips]
    assert mid_guidance.shape == mid.shape
    assert len(unet_skip_shapes(unet)[0]) == len(skips)


@pytest.mark.parametrize("plan", PLANS)
def test_zero_adapters_leave_output_unchanged_until_trained(plan):
    factory, m = PLANS[plan]
    config, guided = build(factory, m)
    wake_up(guided)  # the UNet as after training; the adapters still at their zero init
    _, concat_only = build(factory, m, multiscale_injection=False)
    missing, unexpected = concat_only.load_state_dict(guided.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("guidance.") for k in unexpected)
    inputs = make_inputs(config, m, all_patterns(m))
    with torch.no_grad():
        assert torch.equal(guided(**inputs), concat_only(**inputs))

    optimiser = torch.optim.Adam(guided.parameters(), lr=1e-3)
    out = guided(**inputs)
    ((out - torch.randn_like(out)) ** 2).mean().backward()
    optimiser.step()
    assert all(a.weight.abs().sum() > 0 for a in guided.guidance.skip_adapters)
    concat_only.load_state_dict(guided.state_dict(), strict=False)
    with torch.no_grad():
        with_guidance, without = guided(**inputs), concat_only(**inputs)
        assert (with_guidance - without).abs().max() > 1e-6
        # ... and the prior now acts through the guidance path: perturbing it moves the two models differently.
        moved = dict(inputs, prior=inputs["prior"] + torch.randn_like(inputs["prior"]))
        assert not torch.allclose(guided(**moved), with_guidance)
        assert not torch.allclose(guided(**moved) - with_guidance, concat_only(**moved) - without)


def test_multiscale_injection_off_has_no_guidance_path():
    config, net = build(brats_like, 4, multiscale_injection=False)
    assert net.guidance is None
    assert not any(name.startswith("guidance.") for name, _ in net.named_parameters())
    # The prior still enters as input channels (the published code's conditioning).
    assert net.unet.in_channels == GuidedDenoiser(brats_like(), 4).unet.in_channels


def test_replacement_ablation_reads_kept_noisy_channels():
    config, net = build(tiny_cpu, 4, replacement_sampling=True)
    wake_up(net, keep_zero=None)
    kept = all_patterns(4)
    inputs = make_inputs(config, 4, kept)
    with torch.no_grad():
        changed = dict(inputs, noisy=torch.where(kept[:, :, None, None, None], inputs["noisy"] + 1.0, inputs["noisy"]))
        assert not torch.allclose(net(**changed), net(**inputs))


def test_bad_unet_plan_is_a_one_line_error():
    config = tiny_cpu()
    config.unet.norm_num_groups = 3
    with pytest.raises(MSGLDMError, match="unet.norm_num_groups"):
        GuidedDenoiser(config, 4)
    config = tiny_cpu()
    config.image_size = [40, 40]  # latent 5², not divisible by the UNet's 2
    with pytest.raises(MSGLDMError, match="latent size"):
        GuidedDenoiser(config, 4)
