"""Stage-1/2 networks: the latent autoencoder, the structure–style disentangler (HFIB, MMSF, MSSE, style decoders)
and the plain UNet control."""
from __future__ import annotations

import itertools

import pytest
import torch

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.networks import structure as structure_module
from msgldm_auto.networks.autoencoder import LatentAutoencoder, build_discriminator
from msgldm_auto.networks.disentangler import StructureStyleDisentangler
from msgldm_auto.networks.hfib import HighFrequencyInjection
from msgldm_auto.networks.structure import masked_softmax, rows_only
from msgldm_auto.plans import AutoencoderPlan, ConfigurationPlan, DisentanglerPlan

# name -> (config kwargs, num_modalities, num_label_classes)
PLANS = {
    # BraTS topology (4 modalities, f = 8, 2.5D) shrunk in width and size
    "brats_like": (dict(image_size=[64, 64], latent_scale=8, context_slices=3,
                        ae_channels=[8, 8, 16, 16], structure=[4, 8, 8, 16]), 4, 4),
    # WMH-like: 2 modalities (T1, FLAIR), non-square slices, no 2.5D context
    "wmh_like": (dict(image_size=[64, 48], latent_scale=8, context_slices=1,
                      ae_channels=[8, 8, 16, 16], structure=[4, 4, 8, 8]), 2, 2),
    # the tiny CPU preset: f = 4 at 32²
    "tiny_cpu": (dict(image_size=[32, 32], latent_scale=4, context_slices=3,
                      ae_channels=[8, 8, 16], structure=[4, 8, 8]), 4, 0),
}


def make_config(image_size, latent_scale, context_slices, ae_channels, structure, hfib=True,
                refine_sees_inputs=False) -> ConfigurationPlan:
    config = ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=list(image_size), latent_scale=latent_scale,
        context_slices=context_slices, batch_size=2,
        autoencoder=AutoencoderPlan(channels=list(ae_channels), attention_levels=[False] * len(ae_channels),
                                    norm_num_groups=4),
        disentangler=DisentanglerPlan(structure_channels=list(structure), style_dim=8, style_channels=8,
                                      decoder_channels=8, prior_channels=8, msse_heads=2,
                                      refine_sees_inputs=refine_sees_inputs),
    )
    config.ablations.hfib = hfib
    return config


def build(name: str, **overrides):
    kwargs, modalities, classes = PLANS[name]
    config = make_config(**{**kwargs, **overrides})
    torch.manual_seed(0)
    return config, StructureStyleDisentangler(config, modalities, classes), modalities, classes


def all_patterns(modalities: int) -> torch.Tensor:
    """Every non-empty availability pattern, one per row."""
    rows = [[bool((p >> m) & 1) for m in range(modalities)] for p in range(1, 2**modalities)]
    return torch.tensor(rows, dtype=torch.bool)


def random_images(config: ConfigurationPlan, batch: int, modalities: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, modalities, config.context_slices, *config.image_size)
    return torch.rand(shape, generator=generator) * 2 - 1


# ------------------------------------------------------------------------------------------------ disentangler
@pytest.mark.parametrize("name, sees_inputs", [(name, False) for name in PLANS] + [("brats_like", True)])
def test_forward_backward_under_every_availability_pattern(name, sees_inputs):
    config, model, modalities, classes = build(name, refine_sees_inputs=sees_inputs)
    present = all_patterns(modalities)
    images = random_images(config, len(present), modalities)
    out = model(images, present)

    batch = len(present)
    height, width = config.image_size
    f = config.latent_scale
    assert out.synthesis.shape == (batch, modalities, height, width)
    assert out.synthesis.abs().max() <= 1
    assert out.prior.shape == (batch, config.disentangler.prior_channels, height // f, width // f)
    assert out.styles.shape == (batch, modalities, config.disentangler.style_dim)
    assert [tuple(x.shape) for x in out.fused] == [
        (batch, c, height // 2**level, width // 2**level)
        for level, c in enumerate(config.disentangler.structure_channels)
    ]
    assert (out.seg_logits is None) == (classes == 0)
    if classes:
        assert out.seg_logits.shape == (batch, classes, height, width)
    for weights in out.fusion_weights:  # a distribution over the present modalities, exactly 0 elsewhere
        assert torch.all(weights[~present] == 0)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones_like(weights[:, 0]))

    loss = out.synthesis.mean() + out.prior.mean() + out.styles.mean()
    if out.seg_logits is not None:
        loss = loss + out.seg_logits.mean()
    loss.backward()
    for m in range(modalities):  # every modality is present in some row, so every per-modality module learns
        for module in (model.structure_encoders[m], model.styles.encoders[m], model.decoders[m]):
            grads = [p.grad for p in module.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "name, training, sees_inputs",
    [(name, False, False) for name in PLANS] + [("tiny_cpu", True, False), ("wmh_like", True, False),
                                                ("brats_like", True, True), ("wmh_like", False, True)],
)
def test_missing_modality_has_exactly_zero_influence(name, training, sees_inputs):
    config, model, modalities, _ = build(name, refine_sees_inputs=sees_inputs)
    model.train(training)
    present = all_patterns(modalities)
    images = random_images(config, len(present), modalities)
    changed = torch.where(present[:, :, None, None, None], images,
                          random_images(config, len(present), modalities, 7) * 50)
    changed[~present] = changed[~present].index_fill(-1, torch.tensor([3]), float("nan"))

    torch.manual_seed(3)
    first = model(images, present)
    torch.manual_seed(3)  # the style sampling noise is the same for both calls
    second = model(changed, present)
    pairs = [(first.synthesis, second.synthesis), (first.prior, second.prior), (first.styles, second.styles)]
    pairs += list(zip(first.fused, second.fused)) + list(zip(first.fusion_weights, second.fusion_weights))
    if first.seg_logits is not None:
        pairs.append((first.seg_logits, second.seg_logits))
    for a, b in pairs:
        assert torch.isfinite(b).all()
        assert torch.equal(a, b)
    # ...while a present modality's input does matter
    poked = images.clone()
    poked[0, present[0].nonzero()[0, 0]] += 0.5
    assert not torch.equal(model.eval()(poked, present).synthesis, model(images, present).synthesis)


def test_fusion_ignores_features_of_an_absent_modality():
    """MMSF itself masks: even the absent modality's encoder (run on zeros) cannot leak into the fused structure."""
    config, model, modalities, _ = build("tiny_cpu")
    model.eval()
    present = all_patterns(modalities)
    present = present[~present[:, 0]]  # modality 0 absent everywhere
    images = random_images(config, len(present), modalities)
    before = model(images, present)
    with torch.no_grad():
        for p in itertools.chain(model.structure_encoders[0].parameters(), model.styles.encoders[0].parameters()):
            p.add_(torch.randn_like(p))
    after = model(images, present)
    for a, b in zip(before.fused, after.fused):
        assert torch.equal(a, b)
    assert torch.equal(before.synthesis, after.synthesis)


def test_other_subset_is_fused_from_the_same_encodings_without_changing_the_main_outputs():
    config, model, modalities, _ = build("brats_like")
    model.eval()
    present = torch.tensor([[True, True, False, False], [False, True, True, True]])
    other = torch.tensor([[False, False, True, True], [True, False, False, False]])
    images = random_images(config, 2, modalities)
    with torch.no_grad():
        plain = model(images, present)
        both = model(images, present, other_subset=other)
        separate = model.fuse_structure(images, other)[0]
    assert plain.fused_other is None
    # the same numbers up to rounding (an encoder now runs on the rows that either subset holds, a larger batch)
    torch.testing.assert_close(both.synthesis, plain.synthesis)
    torch.testing.assert_close(both.prior, plain.prior)
    for joint, alone in zip(both.fused_other, separate):
        torch.testing.assert_close(joint, alone)


def test_absent_modality_takes_its_prototype_style():
    config, model, modalities, _ = build("tiny_cpu")
    present = all_patterns(modalities)
    out = model.eval()(random_images(config, len(present), modalities), present)
    rows, cols = (~present).nonzero(as_tuple=True)
    torch.testing.assert_close(out.styles[rows, cols], model.styles.prototypes[cols])
    assert torch.equal(out.styles[present], out.style_stats.mu[present])


def test_rows_only_runs_the_module_on_the_chosen_rows_and_zeros_the_rest():
    torch.manual_seed(0)
    encoder = structure_module.StructureEncoder(3, [4, 8], hfib=True).train()
    inputs = torch.rand(5, 3, 16, 16)
    rows = torch.tensor([True, False, True, True, False])
    full = encoder(inputs)
    chosen = rows_only(encoder, inputs, rows)
    for whole, part in zip(full, chosen, strict=True):
        torch.testing.assert_close(part[rows], whole[rows])      # instance norm: a row's output is its own
        assert torch.equal(part[~rows], torch.zeros_like(part[~rows]))
    none = rows_only(encoder, inputs, torch.zeros(5, dtype=torch.bool))
    assert [tuple(x.shape) for x in none] == [tuple(x.shape) for x in full]
    assert all(torch.equal(x, torch.zeros_like(x)) for x in none)
    sum(x.sum() for x in none).backward()                        # every parameter stays in the graph (DDP)
    assert all(p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)) for p in encoder.parameters())


def test_rows_only_runs_every_row_under_torch_compile(monkeypatch):
    seen = []

    def module(x):
        seen.append(len(x))
        return x + 1

    rows = torch.tensor([True, False, True])
    assert torch.equal(rows_only(module, torch.zeros(3, 2), rows)[0][1], torch.zeros(2)) and seen == [2]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)   # a data-dependent row count breaks the graph
    assert torch.equal(rows_only(module, torch.zeros(3, 2), rows)[0], torch.ones(3, 2)) and seen == [2, 3]


@pytest.mark.parametrize("training", [False, True])
def test_skipping_absent_rows_leaves_the_disentangler_outputs_as_when_every_row_is_encoded(monkeypatch, training):
    config, model, modalities, _ = build("brats_like", refine_sees_inputs=True)
    model.train(training)
    present = all_patterns(modalities)
    images = random_images(config, len(present), modalities)
    torch.manual_seed(3)
    skipping = model(images, present)

    def every_row(module, inputs, rows):                          # the computation before absent rows were skipped
        return rows_only(module, inputs, torch.ones_like(rows))

    monkeypatch.setattr(structure_module, "rows_only", every_row)
    monkeypatch.setattr("msgldm_auto.networks.disentangler.rows_only", every_row)
    torch.manual_seed(3)
    encoding_all = model(images, present)
    torch.testing.assert_close(skipping.synthesis, encoding_all.synthesis)
    torch.testing.assert_close(skipping.prior, encoding_all.prior)
    for a, b in zip(skipping.fusion_weights, encoding_all.fusion_weights, strict=True):
        torch.testing.assert_close(a, b)


def test_masked_softmax_all_masked_row_is_zero_not_nan():
    logits = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(logits, mask, dim=1)
    assert torch.isfinite(weights).all()
    assert torch.equal(weights[1], torch.zeros(3))
    assert weights[0, 1] == 0
    torch.testing.assert_close(weights[0, [0, 2]], torch.softmax(torch.tensor([1.0, 3.0]), 0))


def test_bad_disentangler_plans_raise_clearly():
    kwargs = dict(PLANS["tiny_cpu"][0])
    with pytest.raises(MSGLDMError, match="structure_channels"):
        StructureStyleDisentangler(make_config(**{**kwargs, "structure": [4, 8]}), 4)
    config = make_config(**kwargs)
    config.disentangler.msse_heads = 3
    with pytest.raises(MSGLDMError, match="msse_heads"):
        StructureStyleDisentangler(config, 4)


# ---------------------------------------------------------------------------------------------------------- HFIB
def step_image(size: int = 32, channels: int = 2) -> torch.Tensor:
    image = torch.zeros(1, channels, size, size)
    image[..., size // 2:] = 1.0
    return image


def test_hfib_responds_at_an_edge_and_not_in_flat_regions_or_at_the_border():
    block = HighFrequencyInjection(2)
    response = block.high_pass(step_image()).abs()[0, 0]
    step = response[:, 15:17]
    assert step.min() > 0.2
    far = torch.cat([response[:, :6], response[:, -6:]], dim=1)  # flat, and touching the image border
    assert far.max() < 1e-5
    assert response[:, 8:12].max() < 0.05 < response[:, 13:15].max()  # decays away from the step


def test_hfib_sigma_learns_and_sets_the_width_of_the_response():
    block = HighFrequencyInjection(2)
    torch.testing.assert_close(block.sigma, torch.ones(2))
    block(step_image()).pow(2).mean().backward()
    assert block.sigma_param.grad is not None and torch.all(block.sigma_param.grad != 0)
    narrow = block.high_pass(step_image())[0, 0, 0, 12].abs()
    with torch.no_grad():
        block.sigma_param.fill_(2.5)  # softplus(2.5) ≈ 2.6
    wide = block.high_pass(step_image())[0, 0, 0, 12].abs()
    assert wide > 10 * narrow


def test_hfib_runs_on_maps_smaller_than_its_kernel():
    block = HighFrequencyInjection(1)
    flat = torch.full((1, 1, 4, 4), 0.3)
    assert block.high_pass(flat).abs().max() < 1e-6
    assert block(torch.randn(2, 1, 4, 4)).shape == (2, 1, 4, 4)


def test_hfib_keeps_the_absolute_level_of_its_input():
    """The fuse conv's instance norm maps flat slices of any positive level to the same features, so only the residual
    keeps two slices that differ in level apart, by exactly that difference (without it they would be identical)."""
    block = HighFrequencyInjection(3)
    low, high = block(torch.full((2, 3, 12, 12), 2.0)), block(torch.full((2, 3, 12, 12), 5.0))
    torch.testing.assert_close(high - low, torch.full_like(low, 3.0), atol=1e-3, rtol=0)   # (norm eps aside)
    edge = step_image(channels=3)
    assert not torch.allclose(block(edge), edge)        # at an edge the injection adds something


def test_hfib_ablation_really_changes_the_computation():
    config, with_hfib, modalities, _ = build("tiny_cpu")
    _, without, _, _ = build("tiny_cpu", hfib=False)
    stages = len(config.disentangler.structure_channels)
    assert sum(isinstance(m, HighFrequencyInjection) for m in with_hfib.modules()) == stages * modalities
    assert not any(isinstance(m, HighFrequencyInjection) for m in without.modules())
    # the HFIBs sit on the computation path: changing σ changes the fused structure
    present = torch.ones(2, modalities, dtype=torch.bool)
    images = random_images(config, 2, modalities)
    before = with_hfib.eval()(images, present).fused[0]
    with torch.no_grad():
        for m in with_hfib.modules():
            if isinstance(m, HighFrequencyInjection):
                m.sigma_param.fill_(2.0)
    assert not torch.allclose(before, with_hfib(images, present).fused[0])


# --------------------------------------------------------------------------------------------------- autoencoder
@pytest.mark.parametrize("name", list(PLANS))
def test_autoencoder_shapes_and_scale_factor(name):
    config = make_config(**PLANS[name][0])
    torch.manual_seed(0)
    ae = LatentAutoencoder(config).eval()
    images = torch.rand(2, 1, *config.image_size) * 2 - 1
    latent = ae.encode(images)
    assert latent.shape == (2, config.autoencoder.latent_channels, *config.latent_size)
    assert ae.decode(latent).shape == images.shape
    reconstruction, z_mu, z_sigma = ae(images)
    assert reconstruction.shape == images.shape and z_mu.shape == z_sigma.shape == latent.shape
    # the scale factor multiplies on the way in and divides on the way out, and is saved with the weights
    decoded = ae.decode(latent)
    ae.scale_factor.fill_(2.5)
    torch.testing.assert_close(ae.encode(images), 2.5 * latent)
    torch.testing.assert_close(ae.decode(ae.encode(images)), decoded)
    assert float(ae.state_dict()["scale_factor"]) == 2.5


def test_autoencoder_refuses_widths_that_do_not_give_the_latent_scale():
    config = make_config(**PLANS["tiny_cpu"][0])
    config.latent_scale = 8  # three AE levels give f = 4
    with pytest.raises(MSGLDMError, match=r"down-samples by 4.*latent_scale is 8"):
        LatentAutoencoder(config)
    config = make_config(**PLANS["tiny_cpu"][0])
    config.autoencoder.norm_num_groups = 3
    with pytest.raises(MSGLDMError, match="norm_num_groups"):
        LatentAutoencoder(config)


@pytest.mark.parametrize("name", ["brats_like", "tiny_cpu"])
def test_discriminator_gives_a_patch_map(name):
    config = make_config(**PLANS[name][0])
    logits = build_discriminator(config)(torch.rand(2, 1, *config.image_size))[-1]
    assert logits.shape[:2] == (2, 1) and min(logits.shape[-2:]) >= 2


# ------------------------------------------------------------------------------------------------ plain UNet control
@pytest.mark.parametrize("name", ["brats_like", "wmh_like"])
def test_plain_unet_control_synthesizes_every_modality_and_ignores_absent_ones(name):
    from msgldm_auto.networks.plain_unet import PlainUNet
    from msgldm_auto.plans import ControlPlan

    kwargs, modalities, _ = PLANS[name]
    config = make_config(**kwargs)
    config.control = ControlPlan(channels=[4, 8, 8], num_res_units=1)
    torch.manual_seed(0)
    network = PlainUNet(config, modalities).eval()
    images = random_images(config, 2, modalities)
    present = torch.ones(2, modalities, dtype=torch.bool)
    present[:, 0] = False
    output = network(images, present)
    assert output.shape == (2, modalities, *config.image_size) and output.abs().max() <= 1
    changed = images.clone()
    changed[:, 0] = torch.nan                       # whatever an absent modality holds, it must not matter
    assert torch.equal(network(changed, present), output)
    present[:, 0] = True                            # present, the same channel does matter
    assert not torch.allclose(network(images, present), output)
    config.control = ControlPlan(channels=[4, 8, 8, 8, 8, 8, 8, 8])      # 128x: more than any slice size allows
    with pytest.raises(MSGLDMError, match="does not divide the slice size multiple"):
        PlainUNet(config, modalities)
