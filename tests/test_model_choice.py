"""Choosing the prediction mode by cross-validation (msgldm_find_best_configuration) and following it in prediction."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from test_inference import write_fake_model

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation.model_choice import (
    CHOICE_FILE,
    CHOICE_TABLE_FILE,
    ModelChoice,
    ModeScore,
    PredictionMode,
    choose_mode,
    read_model_choice,
)
from msgldm_auto.evaluation.table import ScoredVolume
from msgldm_auto.inference.model_loading import weights_identity
from msgldm_auto.inference.predictor import PredictionOptions, apply_mode_choice
from msgldm_auto.training.best_configuration import candidate_modes
from msgldm_auto.training.validation import ValidationHeader

DECODER, CONTROL, ONE, MEAN8 = (PredictionMode.decoder(), PredictionMode.control(), PredictionMode.diffusion(1),
                                PredictionMode.diffusion(8))


def score(mode: PredictionMode, psnr: float, hf: float | None) -> ModeScore:
    return ModeScore(mode, 10, psnr, 0.8, hf, 1.0)


def test_the_best_psnr_wins_when_nothing_is_within_the_tie_margin():
    mode, reason = choose_mode([score(DECODER, 20.0, 0.7), score(ONE, 18.0, 1.0), score(CONTROL, 19.7, 0.8)])
    assert mode == DECODER and "best mean PSNR (20.00 dB)" in reason


def test_a_tie_within_0_2_db_goes_to_the_high_frequency_ratio_closest_to_one():
    mode, reason = choose_mode([score(DECODER, 20.0, 0.6), score(MEAN8, 19.85, 0.95), score(ONE, 18.0, 1.0)])
    assert mode == MEAN8 and "tied within 0.2 dB" in reason and "one_pass 20.00 dB" in reason
    # Blur and added noise are judged alike (log ratio): 0.8 is nearer 1 than 1.5.
    assert choose_mode([score(DECODER, 20.0, 0.8), score(ONE, 20.1, 1.5)])[0] == DECODER


def test_an_exact_tie_goes_to_the_cheaper_mode_and_missing_scores_never_win():
    assert choose_mode([score(MEAN8, 20.0, 0.9), score(DECODER, 20.0, 0.9)])[0] == DECODER
    assert choose_mode([ModeScore(ONE, 0, None, None, None, None), score(CONTROL, 5.0, None)])[0] == CONTROL
    with pytest.raises(MSGLDMError, match="no prediction mode"):
        choose_mode([ModeScore(ONE, 0, None, None, None, None)])


def test_mode_scores_pool_every_volume_of_every_fold():
    volumes = [ScoredVolume("a", "T1", 0, "T2", 0, {"psnr": 20.0, "ssim": 0.8, "hf_ratio": 0.5}),
               ScoredVolume("b", "T2", 1, "T1", 0, {"psnr": 24.0, "ssim": 0.9, "hf_ratio": 1.0})]
    pooled = ModeScore.from_volumes(DECODER, volumes)
    assert pooled.psnr == 22.0 and pooled.hf_ratio == 0.75 and pooled.num_volumes == 2
    assert pooled.psnr_per_target == {"T1": 20.0, "T2": 24.0} and pooled.std_error_spearman is None


def test_the_choice_round_trips_through_the_model_folder_and_a_broken_file_is_one_line(tmp_path):
    choice = ModelChoice(MEAN8, "a reason", "final", ["0", "1"], [score(MEAN8, 20.0, 0.9), score(DECODER, 19.9, 0.7)])
    choice.write(tmp_path)
    assert read_model_choice(tmp_path) == choice
    table = (tmp_path / CHOICE_TABLE_FILE).read_text()
    assert "diffusion_mean8" in table and "chosen: diffusion_mean8 (a reason)" in table
    assert read_model_choice(tmp_path / "elsewhere") is None
    (tmp_path / CHOICE_FILE).write_text("{")
    with pytest.raises(MSGLDMError, match="rerun msgldm_find_best_configuration") as err:
        read_model_choice(tmp_path)
    assert "\n" not in str(err.value)


def test_prediction_follows_the_choice_unless_flags_or_mode_say_otherwise(tmp_path):
    ModelChoice(CONTROL, "best", "final", ["0"], [score(CONTROL, 20.0, 0.9)]).write(tmp_path)
    options, mode, note = apply_mode_choice(PredictionOptions(), tmp_path, None, explicit=False)
    assert options.method == "unet" and mode == CONTROL and "chosen by cross-validation" in note
    options, mode, note = apply_mode_choice(PredictionOptions(one_pass=True), tmp_path, None, explicit=True)
    assert options.method == "msgldm" and options.one_pass and mode is None and note is None
    options, mode, _ = apply_mode_choice(PredictionOptions(), tmp_path, "diffusion_mean4", explicit=False)
    assert (options.method, options.one_pass, options.num_samples) == ("msgldm", False, 4)
    assert mode.stages == ("ae", "structure", "ldm") and mode.predictor_mode == "diffusion"
    with pytest.raises(MSGLDMError, match="diffusion_meanK"):
        apply_mode_choice(PredictionOptions(), tmp_path, "diffusion_meanX", explicit=False)
    with pytest.raises(MSGLDMError, match="drop --one-pass"):
        apply_mode_choice(PredictionOptions(), tmp_path, "unet", explicit=True)
    assert apply_mode_choice(PredictionOptions(), tmp_path / "none", None, explicit=False)[0] == PredictionOptions()
    (tmp_path / CHOICE_FILE).write_text("{")                       # flags that say how to predict never read it
    assert apply_mode_choice(PredictionOptions(steps=3), tmp_path, None, explicit=True)[1] is None


def test_a_choice_made_without_percentile_matching_says_so_when_prediction_matches(tmp_path):
    ModelChoice(DECODER, "best", "final", ["0"], [score(DECODER, 20.0, 0.9)]).write(tmp_path)   # an older file
    data = json.loads((tmp_path / CHOICE_FILE).read_text())
    del data["percentile_matched"]
    (tmp_path / CHOICE_FILE).write_text(json.dumps(data))
    assert not read_model_choice(tmp_path).percentile_matched
    note = apply_mode_choice(PredictionOptions(), tmp_path, None, explicit=False)[2]
    assert "without percentile matching" in note and "rerun msgldm_find_best_configuration" in note
    assert "rerun" not in apply_mode_choice(PredictionOptions(match_percentile=False), tmp_path, None, False)[2]
    ModelChoice(DECODER, "best", "final", ["0"], [score(DECODER, 20.0, 0.9)], percentile_matched=True).write(tmp_path)
    assert "rerun" not in apply_mode_choice(PredictionOptions(), tmp_path, None, explicit=False)[2]


def test_candidate_modes_are_what_the_trained_folds_can_run(tmp_path):
    structure_only = write_fake_model(tmp_path / "a", folds=("0", "1", "all"), stages=("structure",))
    assert candidate_modes(structure_only, "final", 8) == {DECODER: ["0", "1"]}
    full = write_fake_model(tmp_path / "b", folds=("0", "1"))
    (full / "fold_1" / "ldm" / "checkpoint_final.pth").unlink()
    write_fake_model(tmp_path / "b", folds=("0",), stages=("unet",))
    assert candidate_modes(full, "final", 8) == {DECODER: ["0", "1"], CONTROL: ["0"], ONE: ["0"], MEAN8: ["0"]}


def test_a_kept_validation_is_reused_only_for_the_same_weights(tmp_path):
    folder = write_fake_model(tmp_path, folds=("0",), stages=("structure",))
    identity = weights_identity(folder, "0", ("structure",))
    header = ValidationHeader("0", "final", "one_pass", 0, 1, 0, "shared", identity, "", True, True)
    assert ValidationHeader.from_summary({**asdict(header), "num_cases": 3, "per_volume": []}) == header
    assert ValidationHeader.from_summary({"mode": "one_pass"}) is None              # written before the header
    checkpoint = folder / "fold_0" / "structure" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"retrained")                 # msgldm_train rewrote it
    assert weights_identity(folder, "0", ("structure",)) != identity
    assert weights_identity(folder, "0", ("ldm",)) == "ldm:missing"


def test_a_zip_carries_an_ldm_trained_beyond_the_plans_so_it_samples_like_its_folder(msgldm_roots, tmp_path):
    import zipfile

    from msgldm_auto.inference.model_zip import export_model_zip

    folder = write_fake_model(msgldm_roots / "results", diffusion=False)      # cpu-like plans, LDM trained anyway
    names = export_model_zip(folder, tmp_path / "model.zip")
    assert sorted(n.split("/")[-2] for n in names if n.endswith(".pth")) == ["ae", "ldm", "structure"]
    assert zipfile.is_zipfile(tmp_path / "model.zip")
