"""Stage-1/2 losses: DCT reconstruction, style consistency and KL, prototypes, structure invariance, AE +
adversarial."""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft
import torch

from msgldm_auto.networks.autoencoder import LatentAutoencoder, build_discriminator
from msgldm_auto.networks.disentangler import StructureStyleDisentangler
from msgldm_auto.plans import Ablations, AutoencoderPlan, ConfigurationPlan, DisentanglerPlan, LossWeights
from msgldm_auto.training import losses


def tiny_config() -> ConfigurationPlan:
    return ConfigurationPlan(
        slice_axis=2, spacing=[1.0, 1.0], image_size=[32, 32], latent_scale=4, context_slices=1, batch_size=2,
        autoencoder=AutoencoderPlan(channels=[8, 8, 16], attention_levels=[False] * 3, norm_num_groups=4),
        disentangler=DisentanglerPlan(structure_channels=[4, 8, 8], style_dim=8, style_channels=8,
                                      decoder_channels=8, prior_channels=8, msse_heads=2),
    )


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Blobby images in [−1, 1] with real structure (random noise has no structure for SSIM to see)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 8, size // 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1


# ------------------------------------------------------------------------------------------------ reconstruction
def test_dct_matches_scipy_and_is_orthonormal():
    matrix = losses.dct_matrix(12, torch.float64)
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(12, dtype=torch.float64))
    x = np.random.default_rng(0).normal(size=(2, 12, 10))
    expected = scipy.fft.dctn(x, type=2, axes=(-2, -1), norm="ortho")
    torch.testing.assert_close(losses.dct2(torch.from_numpy(x)), torch.from_numpy(expected))


def test_reconstruction_loss_is_zero_for_a_perfect_synthesis_and_grows_with_blur():
    target = smooth_images(4).view(2, 2, 32, 32)
    exists = torch.ones(2, 2, dtype=torch.bool)
    assert losses.structure_aware_reconstruction_loss(target, target, exists) < 1e-5
    blurred = torch.nn.functional.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    shifted = target + 0.2
    blur_loss = losses.structure_aware_reconstruction_loss(blurred, target, exists)
    assert blur_loss > 0.01
    # the DCT-SSIM term sees lost detail that L1 alone underrates
    assert losses.dct_magnitude_ssim_loss(blurred.flatten(0, 1)[:, None], target.flatten(0, 1)[:, None]) > \
        losses.dct_magnitude_ssim_loss(shifted.flatten(0, 1)[:, None], target.flatten(0, 1)[:, None])


def test_ssim_loss_is_monais_ssim_with_a_separable_window():
    """The independent computation: MONAI's SSIMLoss, which convolves the full 2-D window."""
    from monai.losses import SSIMLoss

    generator = torch.Generator().manual_seed(0)
    for shape, data_range, window in [((4, 1, 56, 64), 2.0, 11), ((3, 2, 20, 24), 1.0, 7)]:
        prediction = torch.rand(shape, generator=generator) * data_range
        target = (prediction + 0.3 * torch.randn(shape, generator=generator)).clamp(0, data_range)
        expected = SSIMLoss(spatial_dims=2, data_range=data_range, win_size=window)(prediction, target)
        torch.testing.assert_close(losses.ssim_loss(prediction, target, data_range, window), expected,
                                   atol=1e-5, rtol=0)
        assert losses.ssim_loss(target, target, data_range, window).abs() < 1e-5


def test_image_ssim_weight_adds_image_space_ssim_to_the_reconstruction():
    target = smooth_images(4).view(2, 2, 32, 32)
    blurred = torch.nn.functional.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    exists = torch.tensor([[True, False], [True, True]])
    plain = losses.structure_aware_reconstruction_loss(blurred, target, exists)
    weighted = losses.structure_aware_reconstruction_loss(blurred, target, exists, image_ssim=0.5)
    expected = losses.ssim_loss(blurred[exists][:, None], target[exists][:, None], losses.IMAGE_DATA_RANGE)
    assert expected > 0.01
    torch.testing.assert_close(weighted - plain, 0.5 * expected)


def test_reconstruction_loss_ignores_modalities_missing_from_the_data():
    synthesis = smooth_images(4, seed=1).view(2, 2, 32, 32).requires_grad_()
    target = smooth_images(4, seed=2).view(2, 2, 32, 32)
    exists = torch.tensor([[True, False], [True, True]])
    loss = losses.structure_aware_reconstruction_loss(synthesis, target, exists)
    other = target.clone()
    other[0, 1] = 5.0
    assert torch.equal(loss, losses.structure_aware_reconstruction_loss(synthesis, other, exists))
    loss.backward()
    assert torch.all(synthesis.grad[0, 1] == 0) and synthesis.grad[1, 1].abs().sum() > 0
    empty = losses.structure_aware_reconstruction_loss(synthesis, target, torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0 and empty.requires_grad


# --------------------------------------------------------------------------------------------------------- style
def clustered_codes(per_modality: int = 6, modalities: int = 4, dim: int = 8):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(modalities, dim, generator=generator) * 3
    labels = torch.arange(modalities).repeat_interleave(per_modality)
    codes = centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=generator)
    return codes, labels


def test_style_loss_is_lower_for_codes_clustered_by_modality_than_for_shuffled():
    codes, labels = clustered_codes()
    contrastive = losses.StyleContrastiveLoss()
    clustered = contrastive(codes, labels)
    shuffled = contrastive(codes, labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))])
    assert clustered < shuffled - 1.0


def test_style_temperature_is_learnable_and_singletons_give_no_nan():
    codes, labels = clustered_codes()
    contrastive = losses.StyleContrastiveLoss()
    contrastive(codes, labels).backward()
    assert contrastive.log_temperature.grad is not None and contrastive.log_temperature.grad != 0
    lonely = contrastive(codes[:3], torch.tensor([0, 1, 2]))  # no positives at all
    assert lonely.item() == 0 and torch.isfinite(lonely)


def test_style_consistency_pulls_prototypes_and_uses_only_present_codes():
    mu = torch.randn(3, 2, 8, requires_grad=True)
    prototypes = torch.randn(2, 8, requires_grad=True)
    present = torch.tensor([[True, True], [True, False], [False, True]])
    loss = losses.style_consistency_loss(losses.StyleContrastiveLoss(), mu, present, prototypes)
    loss.backward()
    assert prototypes.grad.abs().sum() > 0
    assert torch.all(mu.grad[~present] == 0) and mu.grad[present].abs().sum() > 0


def test_prototype_pull_moves_only_the_prototypes_toward_their_modality():
    mu = torch.randn(4, 2, 8, requires_grad=True)
    present = torch.tensor([[True, False]] * 4)
    prototypes = torch.zeros(2, 8, requires_grad=True)
    loss = losses.prototype_pull_loss(prototypes, mu, present)
    loss.backward()
    assert mu.grad is None  # encoders are not bent toward prototypes
    assert torch.all(prototypes.grad[1] == 0)  # modality 1 never seen in this batch
    at_mean = mu.detach().mean(dim=0)[0:1]
    assert losses.prototype_pull_loss(torch.cat([at_mean, torch.zeros(1, 8)]), mu, present) < 1e-10


def test_style_kl_is_zero_at_the_standard_normal_and_ignores_absent():
    present = torch.tensor([[True, False]])
    zeros = torch.zeros(1, 2, 8)
    assert losses.style_kl_loss(zeros, zeros, present) == 0
    mu = zeros.clone()
    mu[0, 1] = 4.0  # absent: no effect
    assert losses.style_kl_loss(mu, zeros, present) == 0
    mu[0, 0] = 1.0
    torch.testing.assert_close(losses.style_kl_loss(mu, zeros, present), torch.tensor(4.0))  # 0.5 * 8 * 1²


# --------------------------------------------------------------------------------------------- structure, labels
def test_invariance_is_positive_for_different_subsets_and_reaches_both_encoders():
    config = tiny_config()
    torch.manual_seed(0)
    model = StructureStyleDisentangler(config, 4)
    images = smooth_images(8).view(2, 4, 1, 32, 32)
    subset_a = torch.tensor([[True, True, False, False]] * 2)
    subset_b = torch.tensor([[False, False, True, True]] * 2)
    fused_a, _ = model.fuse_structure(images, subset_a)
    fused_b, _ = model.fuse_structure(images, subset_b)
    loss = losses.structure_invariance_loss(fused_a, fused_b)
    assert loss > 1e-3
    loss.backward()
    for m in range(4):
        grads = [p.grad for p in model.structure_encoders[m].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"encoder {m} got no gradient"
    same = losses.structure_invariance_loss(fused_a, [x.detach() * 3 for x in fused_a])
    assert same.abs() < 1e-5  # scale-invariant: shrinking features is no shortcut
    # a row whose other subset is empty (fused to exactly zero) is skipped, not counted as maximally different
    empty = torch.tensor([[False] * 4, [False, False, True, True]])
    fused_empty, _ = model.fuse_structure(images, empty)
    assert all(torch.equal(level[0], torch.zeros_like(level[0])) for level in fused_empty)
    one_row = losses.structure_invariance_loss([x[1:] for x in fused_a], [x[1:] for x in fused_b])
    torch.testing.assert_close(losses.structure_invariance_loss(fused_a, fused_empty), one_row)


def test_structure_stage_fuses_the_complement_only_when_the_invariance_weighs():
    """The complement's fusion only feeds the invariance loss: a step at weight 0 (planned for time-budgeted
    training) does not ask the disentangler for it, a weighted one asks for exactly present & ~kept."""
    from msgldm_auto.training.data_loader import SliceBatch
    from msgldm_auto.training.stages.base import StepContext
    from msgldm_auto.training.stages.structure import StructureStage

    images = smooth_images(8).view(2, 4, 1, 32, 32)
    present = torch.tensor([[True, True, False, True], [True, True, True, True]])
    kept = torch.tensor([[True, False, False, False], [False, True, True, False]])
    batch = SliceBatch(images, present, kept, None, np.zeros((2, 2), dtype=int))
    for weight, expected in ((0.1, present & ~kept), (0.0, None)):
        config = tiny_config()
        config.losses = dataclasses.replace(config.losses, structure_invariance=weight)
        stage = StructureStage(config, 4, 0, torch.device("cpu"), learning_rate=1e-3)
        disentangler = stage.networks["disentangler"]
        asked = []
        forward = disentangler.forward
        disentangler.forward = lambda *args, other_subset=None: asked.append(other_subset) or forward(
            *args, other_subset=other_subset)
        step = StepContext(0, 0.0, torch.device("cpu"), stage.optimizers,
                           {"disentangler": torch.amp.GradScaler("cpu", enabled=False)})
        results = stage.train_step(batch, step)
        assert len(asked) == 1
        if expected is None:
            assert asked[0] is None and results["structure_invariance"] == 0
        else:
            assert torch.equal(asked[0], expected) and results["structure_invariance"] > 0


def test_segmentation_loss_prefers_the_right_labels():
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:10, 4:10] = 1
    right = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 10
    wrong = right.flip(1)
    assert losses.segmentation_loss(right, target) < 0.1 < losses.segmentation_loss(wrong, target)


def test_disentangler_loss_combines_terms_and_honours_the_style_ablation():
    config = tiny_config()
    torch.manual_seed(0)
    model = StructureStyleDisentangler(config, 4, num_label_classes=2)
    images = smooth_images(8).view(2, 4, 1, 32, 32)
    present = torch.tensor([[True, True, False, True], [True, False, True, True]])
    exists = torch.ones(2, 4, dtype=torch.bool)
    seg = torch.zeros(2, 32, 32, dtype=torch.long)
    seg[:, 10:20, 10:20] = 1
    contrastive = losses.StyleContrastiveLoss()
    torch.manual_seed(1)
    out = model(images, present)
    other, _ = model.fuse_structure(images, ~present | torch.tensor([[True, False, False, False]] * 2))
    terms = losses.disentangler_loss(out, images[:, :, 0], exists, config.losses, config.ablations, contrastive, seg,
                                     other)
    values = terms.as_floats()
    assert all(values[k] > 0 for k in values), values
    w = config.losses
    expected = (w.reconstruction * terms.reconstruction + w.style_contrastive * terms.style_contrastive
                + w.style_kl * terms.style_kl + terms.prototype + w.structure_invariance * terms.structure_invariance
                + w.segmentation * terms.segmentation)
    torch.testing.assert_close(terms.total, expected)
    terms.total.backward()
    assert contrastive.log_temperature.grad is not None
    no_style = losses.disentangler_loss(out, images[:, :, 0], exists, config.losses,
                                        Ablations(style_consistency=False), contrastive, seg, other)
    assert no_style.style_contrastive == 0 and no_style.total < terms.total


def test_reconstruction_weighs_the_given_modalities_by_reconstruction_kept():
    """reconstruction = dropped + reconstruction_kept × kept: an error on a given modality counts only through the
    weight, an error on a dropped one fully."""
    config = tiny_config()
    torch.manual_seed(0)
    model = StructureStyleDisentangler(config, 4)
    images = smooth_images(8).view(2, 4, 1, 32, 32)
    present = torch.tensor([[True, True, False, False], [True, False, True, False]])
    exists = torch.ones(2, 4, dtype=torch.bool)
    out = model(images, present)
    targets = images[:, :, 0]
    dropped = losses.structure_aware_reconstruction_loss(out.synthesis, targets, exists & ~present)
    kept = losses.structure_aware_reconstruction_loss(out.synthesis, targets, exists & present)
    for weight in (0.0, 0.1, 1.0):
        terms = losses.disentangler_loss(out, targets, exists, dataclasses.replace(config.losses,
                                         reconstruction_kept=weight), config.ablations, losses.StyleContrastiveLoss())
        torch.testing.assert_close(terms.reconstruction, dropped + weight * kept)
    assert float(kept) > 0 and float(dropped) > 0
    # image-space SSIM scores the synthesis task only: the dropped modalities, as the control's loss does
    dropped_ssim = losses.structure_aware_reconstruction_loss(out.synthesis, targets, exists & ~present, image_ssim=1.0)
    weights = dataclasses.replace(config.losses, reconstruction_kept=0.1, reconstruction_image_ssim=1.0)
    terms = losses.disentangler_loss(out, targets, exists, weights, config.ablations, losses.StyleContrastiveLoss())
    torch.testing.assert_close(terms.reconstruction, dropped_ssim + 0.1 * kept)
    assert float(dropped_ssim) > float(dropped)


# ---------------------------------------------------------------------------------------------------- autoencoder
def test_autoencoder_loss_terms_and_adversarial_switch():
    config = tiny_config()
    torch.manual_seed(0)
    ae, discriminator = LatentAutoencoder(config), build_discriminator(config)
    images = smooth_images(2)
    reconstruction, z_mu, z_sigma = ae(images)
    weights = LossWeights()
    plain = losses.autoencoder_generator_loss(reconstruction, images, z_mu, z_sigma, weights)
    assert plain.adversarial == 0 and plain.l1 > 0 and plain.ssim > 0 and plain.spectral > 0 and plain.kl > 0
    adversarial = losses.autoencoder_generator_loss(reconstruction, images, z_mu, z_sigma, weights, discriminator)
    assert adversarial.adversarial > 0
    torch.testing.assert_close(adversarial.total - plain.total, weights.ae_adversarial * adversarial.adversarial)
    perfect = losses.autoencoder_generator_loss(images, images, torch.zeros_like(z_mu), torch.ones_like(z_sigma),
                                                weights)
    assert perfect.total.abs() < 1e-5
    assert not losses.adversarial_active(0.2, weights) and losses.adversarial_active(0.6, weights)


def test_discriminator_loss_trains_the_discriminator_only():
    config = tiny_config()
    torch.manual_seed(0)
    ae, discriminator = LatentAutoencoder(config), build_discriminator(config)
    images = smooth_images(2)
    reconstruction, _, _ = ae(images)
    loss = losses.discriminator_loss(discriminator, images, reconstruction)
    assert loss > 0
    loss.backward()
    assert all(p.grad is None for p in ae.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters())
