"""Training: splits, availability patterns, the slice loader, augmentation, checkpoints, exact resume, time budget
and the msgldm_train CLI (tiny real networks end to end)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_standins import MemoryReader, TinySynthesisStage, coded_case, smooth_case, write_preprocessed_dataset  # noqa: E402

from msgldm_auto.cli.train import main  # noqa: E402
from msgldm_auto.errors import MSGLDMError  # noqa: E402
from msgldm_auto.training.augmentation import IntensityOnKeptTransform, build_transforms  # noqa: E402
from msgldm_auto.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint  # noqa: E402
from msgldm_auto.training.data_loader import build_slice_index, make_training_batches, validation_batches  # noqa: E402
from msgldm_auto.training.ddp import DistributedContext  # noqa: E402
from msgldm_auto.training.ema import make_ema, warmup_decay  # noqa: E402
from msgldm_auto.training.patterns import count_valid_patterns, draw_kept, pattern_code  # noqa: E402
from msgldm_auto.training.splits import fold_cases, load_splits, make_splits, parse_fold  # noqa: E402
from msgldm_auto.training.trainer import (  # noqa: E402
    StageTrainer,
    TrainerSettings,
    cooldown_factor,
    learning_rate_factor,
    poly_factor,
    schedule_progress,
)

CPU = DistributedContext(0, 1, 0, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------------- splits
def test_splits_are_seeded_disjoint_and_cover_every_case():
    cases = [f"c{i:02d}" for i in range(12)]
    splits = make_splits(cases)
    assert splits == make_splits(list(reversed(cases)))                      # seeded, order-independent
    assert len(splits) == 5
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == set(cases) and sum(len(v) for v in vals) == 12
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
        assert set(split["train"]) | set(split["val"]) == set(cases)
    assert fold_cases(splits, "all", cases, Path("x")).train == cases


def test_user_splits_are_respected_and_checked(tmp_path):
    cases = ["a", "b", "c"]
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]}]))
    splits, new = load_splits(tmp_path, cases)
    assert not new and fold_cases(splits, "0", cases, tmp_path).val == ["c"]
    with pytest.raises(MSGLDMError, match="fold 1 does not exist"):
        fold_cases(splits, "1", cases, tmp_path / "splits_final.json")
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["a", "zz"], "val": ["c"]}]))
    with pytest.raises(MSGLDMError, match="not preprocessed"):
        load_splits(tmp_path, cases)
    with pytest.raises(MSGLDMError, match="out of range"):
        parse_fold("5")


# ----------------------------------------------------------------------------------------------------- patterns
@pytest.mark.parametrize("present", [[True, True, True, False], [True, False, True, False], [True] * 4])
def test_patterns_are_uniform_over_the_valid_ones(present):
    present = np.array(present)
    rng = np.random.default_rng(0)
    draws = 600 * count_valid_patterns(present)
    counts: dict[int, int] = {}
    for _ in range(draws):
        kept = draw_kept(present, rng)
        assert kept.any() and not (kept == present).all() and not (kept & ~present).any()
        counts[pattern_code(kept)] = counts.get(pattern_code(kept), 0) + 1
    assert len(counts) == 2 ** present.sum() - 2                               # every valid pattern occurs
    assert max(abs(c - 600) for c in counts.values()) < 5 * np.sqrt(600)     # ... equally often (5 sigma)


# ------------------------------------------------------------------------------------------------------- loader
def _coded_reader():
    cases = {"a": coded_case([0, 1, 2], num_slices=5, foreground=[1, 2, 3, 4], case_number=1),
             "b": coded_case([0, 2], num_slices=5, foreground=[0, 1, 2, 3, 4], case_number=2),
             "c": coded_case([1], num_slices=5, case_number=3)}                 # one modality: nothing to drop
    return MemoryReader(cases)


def test_loader_batches_follow_the_contract():
    reader = _coded_reader()
    index = build_slice_index(reader, ["a", "b", "c"], 3)
    assert index.case_ids == ["a", "b"] and len(index) == 9                    # empty slice of "a" and case "c" skipped
    batches = make_training_batches(reader, index, 3, 3, [8, 8], 6, seed=3, augment=False, num_workers=0)
    for _ in range(3):
        batch = next(batches)
        assert batch.images.shape == (6, 3, 3, 8, 8) and batch.images.dtype == torch.float32
        assert batch.images.min() >= -1 and batch.images.max() <= 1 and batch.seg is None
        assert batch.kept.any(1).all() and not (batch.kept & ~batch.present).any()
        assert ((batch.present & ~batch.kept).any(1)).all()                    # something to synthesise in every sample
        for sample, (case_number, z) in enumerate(batch.slice_ids):
            case = reader.cases[index.case_ids[case_number]]
            assert z in case.foreground_slices
            assert batch.present[sample].tolist() == [m in case.present for m in range(3)]
            for m in case.present:                                             # neighbours clamped at the edges
                expected = [(m * 100 + min(max(zz, 0), 4) * 10 + case_number + 1) / 1000 for zz in (z - 1, z, z + 1)]
                assert np.allclose(batch.images[sample, m, :, 0, 0].numpy(), expected)
            for m in set(range(3)) - set(case.present):
                assert (batch.images[sample, m] == -1).all()


def test_batch_order_depends_only_on_seed_and_batch_number_and_ranks_are_disjoint():
    rng = np.random.default_rng(0)
    reader = MemoryReader({f"c{i}": smooth_case([0, 1, 2], rng, num_slices=4) for i in range(4)})   # 16 slices
    index = build_slice_index(reader, list(reader.cases), 3)
    one = make_training_batches(reader, index, 3, 1, [8, 8], 4, seed=1, augment=False, num_workers=0)
    single = [next(one) for _ in range(4)]                                     # one pass over the 16 slices
    resumed = make_training_batches(reader, index, 3, 1, [8, 8], 4, seed=1, augment=False, num_workers=0, start_batch=2)
    assert torch.equal(next(resumed).images, single[2].images)
    ranks = [make_training_batches(reader, index, 3, 1, [8, 8], 4, seed=1, rank=r, world_size=2, augment=False,
                                   num_workers=0)
             for r in range(2)]
    seen = [set(), set()]
    for k in range(4):
        parts = [next(r) for r in ranks]
        assert np.array_equal(np.concatenate([p.slice_ids for p in parts]), single[k].slice_ids)
        assert torch.equal(torch.cat([p.kept for p in parts]), single[k].kept)
        for r, part in enumerate(parts):
            seen[r] |= {tuple(s) for s in part.slice_ids}
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 16


def test_worker_processes_give_the_same_batches_in_the_same_order():
    rng = np.random.default_rng(0)
    reader = MemoryReader({f"c{i}": smooth_case([0, 1, 2], rng) for i in range(3)})
    index = build_slice_index(reader, list(reader.cases), 3)
    plain = make_training_batches(reader, index, 3, 1, [8, 8], 2, seed=5, augment=False, num_workers=0)
    threaded = make_training_batches(reader, index, 3, 1, [8, 8], 2, seed=5, augment=False, num_workers=2)
    try:
        for _ in range(5):
            assert np.array_equal(next(plain).slice_ids, next(threaded).slice_ids)
    finally:
        threaded.close()


_KILLED_TRAINER = """
import os, sys, time
import numpy as np
from training_standins import MemoryReader, smooth_case
from msgldm_auto.training.data_loader import build_slice_index, make_training_batches
rng = np.random.default_rng(0)
reader = MemoryReader({f"c{i}": smooth_case([0, 1, 2], rng) for i in range(3)})
index = build_slice_index(reader, list(reader.cases), 3)
batches = make_training_batches(reader, index, 3, 1, [8, 8], 2, seed=5, augment=False, num_workers=2)
next(batches)
time.sleep(1.0)                     # the workers fill their queues and wait
print(" ".join(str(p.pid) for p in batches.augmenter._processes), flush=True)
time.sleep(600)
"""


def test_data_loader_workers_exit_when_the_trainer_is_killed():
    import os
    import signal
    import subprocess
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    trainer = subprocess.Popen([sys.executable, "-c", _KILLED_TRAINER], stdout=subprocess.PIPE, text=True, env=env)
    workers = [int(pid) for pid in trainer.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a data-loader worker outlived its killed trainer"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:            # a zombie has exited; nobody reaped it yet
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_spatial_augmentation_is_shared_and_intensity_touches_inputs_only():
    np.random.seed(0)
    base = np.random.uniform(-1, 1, size=(4, 1, 16, 16)).astype(np.float32)
    base[:, :, :3] = -1.0
    data = np.repeat(base, 3, axis=1)                                          # 3 identical modalities, C = 1
    kept = np.array([[True, False, False]] * 4)
    spatial_only = build_transforms([16, 16], 1, augment=True).transforms[:-2]
    out = {"data": data.copy(), "kept": kept}
    for transform in spatial_only:
        out = transform(**out)
    assert np.allclose(out["data"][:, 0], out["data"][:, 1]) and np.allclose(out["data"][:, 0], out["data"][:, 2])
    intensity = IntensityOnKeptTransform(context_slices=1, p_per_sample=1.0)
    before = data.copy()
    after = intensity(data=data, kept=kept)["data"]
    assert np.array_equal(after[:, 1:], before[:, 1:])                         # targets untouched
    assert not np.allclose(after[:, 0], before[:, 0])                          # inputs changed ...
    assert (after[:, 0][before[:, 0] == -1] == -1).all() and after.max() <= 1  # ... background and range kept


# -------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_atomic_plain_and_restores_rng(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint({"weights": {"w": torch.ones(2)}, "rng_state": capture_rng_state(), "epoch": 3}, path)
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    loaded = load_checkpoint(path)                                              # weights_only=True inside
    assert loaded["epoch"] == 3 and list(tmp_path.iterdir()) == [path]        # no temporary left behind
    restore_rng_state(loaded["rng_state"])
    again = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
    path.write_bytes(b"truncated")
    with pytest.raises(MSGLDMError, match="not a readable"):
        load_checkpoint(path)


class _KilledAt:
    """Training batches that end the process (as a kill would) when batch number `kill_at` is requested."""

    def __init__(self, batches, kill_at: int):
        self.batches, self.left = batches, kill_at

    def __next__(self):
        if self.left == 0:
            raise KeyboardInterrupt("simulated kill")
        self.left -= 1
        return next(self.batches)

    def close(self) -> None:
        self.batches.close()


def _tiny_run(folder: Path, kill_at_batch: int | None = None, ema_decay: float | None = None, **settings):
    rng = np.random.default_rng(0)
    reader = MemoryReader({f"c{i}": smooth_case([0, 1, 2], rng) for i in range(4)})
    index = build_slice_index(reader, list(reader.cases), 3)

    def make(start):
        batches = make_training_batches(reader, index, 3, 1, [8, 8], 4, seed=0, start_batch=start, num_workers=0)
        return batches if kill_at_batch is None else _KilledAt(batches, kill_at_batch)

    torch.manual_seed(1)
    np.random.seed(1)
    stage = TinySynthesisStage(3, 1)
    stage.keep_average(ema_decay)
    options = dict(epochs=2, iterations_per_epoch=3, checkpoint_every=1, show_progress=False)
    options.update(settings)
    trainer = StageTrainer(stage, TrainerSettings(**options), folder, CPU, {"fold": "0"})
    try:
        result = trainer.fit(make, validation_batches(reader, index, 3, 1, 4, 8, seed=0))
    except KeyboardInterrupt:
        result = None
    return stage.networks["net"].state_dict(), result


def test_resume_gives_bit_identical_weights(tmp_path):
    straight, result = _tiny_run(tmp_path / "straight")
    assert result.completed and result.iterations_done == 6
    halfway, killed = _tiny_run(tmp_path / "resumed", kill_at_batch=4)                 # killed early in epoch 2
    assert killed is None and not (tmp_path / "resumed" / "checkpoint_final.pth").exists()
    assert not all(torch.equal(straight[k], halfway[k]) for k in straight)
    torch.manual_seed(123)                                                     # the checkpoint must restore the RNGs
    np.random.seed(123)
    resumed, result = _tiny_run(tmp_path / "resumed", resume=True)
    assert result.completed
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    for name in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth", "progress.png",
                 "training_log.txt"):
        assert (tmp_path / "resumed" / name).is_file()
    history = torch.load(tmp_path / "resumed" / "checkpoint_final.pth", weights_only=True)["history"]
    assert history["epoch"] == [0, 1]


def test_the_trainer_averages_every_step_and_a_resumed_average_is_the_same(tmp_path):
    _tiny_run(tmp_path / "straight", ema_decay=0.99)
    final = load_checkpoint(tmp_path / "straight" / "checkpoint_final.pth")
    weights, last = final["inference_weights"], final["network_weights"]["net"]
    assert int(final["extra_state"]["ema"]["n_averaged"]) == 6                   # one update per iteration
    assert all(not torch.equal(weights[k], last[k]) for k in last)              # prediction gets the average
    _tiny_run(tmp_path / "resumed", kill_at_batch=4, ema_decay=0.99)
    _tiny_run(tmp_path / "resumed", resume=True, ema_decay=0.99)
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint_final.pth")["inference_weights"]
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_latest_checkpoint_is_also_written_by_the_clock_so_a_kill_loses_little(tmp_path):
    # Epochs between periodic checkpoints far apart: only the clock (every ~0 minutes here) can write `latest`.
    _tiny_run(tmp_path / "clock", kill_at_batch=4, epochs=4, checkpoint_every=100, latest_every_minutes=0.0)
    assert load_checkpoint(tmp_path / "clock" / "checkpoint_latest.pth")["iteration"] == 3
    _tiny_run(tmp_path / "epochs", kill_at_batch=4, epochs=4, checkpoint_every=100)
    assert not (tmp_path / "epochs" / "checkpoint_latest.pth").exists()     # the default clock has not struck yet


def test_continue_without_a_checkpoint_says_so_and_starts_from_scratch(tmp_path):
    _, result = _tiny_run(tmp_path, resume=True)
    assert result.completed
    assert "no checkpoint to continue from" in (tmp_path / "training_log.txt").read_text()


def test_time_budget_ends_the_stage_cleanly_at_a_checkpoint(tmp_path):
    _, result = _tiny_run(tmp_path, epochs=50, max_minutes=1e-6)
    assert result.stopped_by_time and not result.completed and result.iterations_done == 1
    final = load_checkpoint(tmp_path / "checkpoint_final.pth")
    assert final["iteration"] == 1 and "inference_weights" in final
    assert "time budget" in (tmp_path / "training_log.txt").read_text()


def test_stage_progress_is_whichever_runs_out_first_iterations_or_minutes():
    assert schedule_progress(10, 1000, seconds=30.0, budget_seconds=60.0) == 0.5          # the clock leads
    assert schedule_progress(900, 1000, seconds=30.0, budget_seconds=60.0) == 0.9         # the iterations lead
    assert schedule_progress(10, 1000, seconds=1e9, budget_seconds=None) == 0.01          # no budget: iterations
    assert schedule_progress(10, 1000, seconds=90.0, budget_seconds=60.0) == 1.0
    assert poly_factor(0.0) == 1.0 and poly_factor(1.0) == 0.0 and 0.5 < poly_factor(0.5) < 0.6


def test_cooldown_holds_the_rate_then_falls_linearly_to_zero():
    assert cooldown_factor(0.5, 0.0) == 1.0 and cooldown_factor(1.0, 0.0) == 1.0     # 0: no cool-down at all
    assert cooldown_factor(0.79, 0.2) == 1.0
    assert cooldown_factor(0.9, 0.2) == pytest.approx(0.5) and cooldown_factor(0.95, 0.2) == pytest.approx(0.25)
    assert cooldown_factor(1.0, 0.2) == 0.0


def test_a_stage_with_a_cool_down_holds_its_rate_instead_of_decaying_by_poly():
    """Planned cool-downs shape the rate alone, by iterations or minutes alike; poly only without one."""
    assert learning_rate_factor(0.5, 0.5, 0.2) == 1.0                          # no poly decay on top
    assert learning_rate_factor(0.9, 0.9, 0.2) == pytest.approx(0.5)           # an iteration budget cools down too
    assert learning_rate_factor(0.1, 0.9, 0.2) == pytest.approx(0.5)           # ... and so does the clock
    assert learning_rate_factor(0.5, 0.9, 0.0) == pytest.approx(poly_factor(0.5))   # no cool-down: poly by iterations


def test_a_time_boxed_stage_ends_cooled_down(tmp_path):
    _tiny_run(tmp_path, kill_at_batch=4, epochs=50, max_minutes=10.0, cooldown_fraction=0.2)
    latest = tmp_path / "checkpoint_latest.pth"
    checkpoint = load_checkpoint(latest)
    checkpoint["train_seconds"] = 600.0 - 1e-3     # the budget, not the epochs, nearly spent
    save_checkpoint(checkpoint, latest)
    _, result = _tiny_run(tmp_path, epochs=50, max_minutes=10.0, resume=True, cooldown_fraction=0.2)
    assert result.stopped_by_time and result.iterations_done == 4
    group = load_checkpoint(tmp_path / "checkpoint_final.pth")["optimizer_state"]["net"]["param_groups"][0]
    assert group["lr"] < 1e-4 * group["initial_lr"]      # the clock's progress, not the iterations', cooled it


def test_continued_run_spends_only_the_rest_of_the_budget(tmp_path):
    _tiny_run(tmp_path, kill_at_batch=4, epochs=50, max_minutes=10.0)          # killed in epoch 2
    latest = tmp_path / "checkpoint_latest.pth"
    checkpoint = load_checkpoint(latest)
    assert 0.0 < checkpoint["train_seconds"] < 600.0
    checkpoint["train_seconds"] = 600.0 - 1e-3                                  # as if 10 minutes were nearly spent
    save_checkpoint(checkpoint, latest)
    _, result = _tiny_run(tmp_path, epochs=50, max_minutes=10.0, resume=True)
    assert result.stopped_by_time and result.iterations_done == 4            # 3 before the "kill", 1 after
    final = load_checkpoint(tmp_path / "checkpoint_final.pth")
    group = final["optimizer_state"]["net"]["param_groups"][0]
    assert group["lr"] == pytest.approx(group["initial_lr"] * poly_factor(3 / 150))   # by iterations, not the clock
    _, again = _tiny_run(tmp_path, epochs=50, max_minutes=10.0, resume=True)
    assert again.iterations_done == 4 and "raise --max-minutes" in (tmp_path / "training_log.txt").read_text()


def test_ema_follows_the_model():
    model = torch.nn.Linear(2, 2)
    ema = make_ema(model, decay=0.5)
    ema.update_parameters(model)                      # the first update copies
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, before + 1.0 - warmup_decay(0.5, 1))
    assert warmup_decay(0.5, 1) == pytest.approx(2 / 11) and warmup_decay(0.5, 1e6) == 0.5


def test_ema_forgets_the_initial_weights_of_a_short_stage():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)                       # "the initial weights"
        ema.update_parameters(model)
        model.weight.fill_(0.0)                       # every trained weight after them
        for _ in range(600):
            ema.update_parameters(model)
    kept = float(ema.module.weight.detach())
    assert kept == pytest.approx(math.prod(warmup_decay(0.999, n) for n in range(1, 601)), rel=1e-4)
    assert kept < 1e-6 < 0.999**600 / 1e5             # a fixed 0.999 would keep 55 % of them


def test_a_stage_keeping_an_average_predicts_validates_and_resumes_with_it(tmp_path):
    stage = TinySynthesisStage(3, 1)
    assert stage.prediction_network() is stage.networks["net"] and stage.extra_state() == {}
    stage.keep_average(0.9)
    with torch.no_grad():
        for value in (1.0, 2.0, 3.0):
            for parameter in stage.networks["net"].parameters():
                parameter.fill_(value)
            stage.update_average()
    averaged = stage.inference_weights()
    last = stage.networks["net"].state_dict()
    assert all(not torch.equal(averaged[k], last[k]) for k in last)          # prediction gets the average
    assert not stage.prediction_network().training                            # and runs it in eval mode
    state = stage.extra_state()
    fresh = TinySynthesisStage(3, 1)
    fresh.keep_average(0.9)
    fresh.load_extra_state(state)
    assert all(torch.equal(fresh.inference_weights()[k], averaged[k]) for k in averaged)
    with pytest.raises(MSGLDMError, match=r"ema_decay is 1.5; set it in \[0, 1\)"):
        fresh.keep_average(1.5)


# ----------------------------------------------------------------------------------------------------------- CLI
def test_cli_trains_three_stages_of_a_fold(msgldm_roots, capsys):
    preprocessed = write_preprocessed_dataset(msgldm_roots / "preprocessed")
    assert main(["1", "2d", "0", "-device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    model = msgldm_roots / "results" / "Dataset001_Toy" / "MSGLDMPlans__2d"
    assert (model / "plans.json").is_file() and (model / "dataset.json").is_file()
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    assert len(splits) == 5 and len(splits[0]["val"]) == 1
    for stage in ("ae", "structure", "ldm"):
        final = model / "fold_0" / stage / "checkpoint_final.pth"
        assert str(final) in out
        log = (model / "fold_0" / stage / "training_log.txt").read_text()
        assert "from 4 cases" in log                                           # only the fold's training cases
        assert "precision: " in log                                            # what the networks trained in
        assert (model / "fold_0" / stage / "progress.png").is_file()
    ae = load_checkpoint(model / "fold_0" / "ae" / "checkpoint_final.pth")
    assert ae["inference_weights"]["scale_factor"].item() != 1.0              # set from the latents' std
    ldm = load_checkpoint(model / "fold_0" / "ldm" / "checkpoint_final.pth")
    assert "ema" in ldm["extra_state"] and ldm["fold"] == "0"
    assert main(["1", "2d", "0", "-device", "cpu", "--stage", "ldm", "--c", "--no-progress"]) == 0
    assert "nothing to do" in (model / "fold_0" / "ldm" / "training_log.txt").read_text()


def test_plans_without_diffusion_train_only_the_structure_stage_and_validate_after_it(msgldm_roots, capsys):
    from msgldm_auto.plans import Plans

    preprocessed = write_preprocessed_dataset(msgldm_roots / "preprocessed")
    plans = Plans.load(preprocessed / "MSGLDMPlans.json")
    plans.configuration("2d").ablations.diffusion = False
    plans.configuration("2d").schedule["structure"].ema_decay = 0.99
    plans.save(preprocessed / "MSGLDMPlans.json")
    assert main(["1", "2d", "0", "-device", "cpu", "--no-progress"]) == 0
    captured = capsys.readouterr()
    fold = msgldm_roots / "results" / "Dataset001_Toy" / "MSGLDMPlans__2d" / "fold_0"
    structure = load_checkpoint(fold / "structure" / "checkpoint_final.pth")
    averaged, last = structure["inference_weights"], structure["network_weights"]["disentangler"]
    assert "ema" in structure["extra_state"] and any(not torch.equal(averaged[k], last[k]) for k in last)
    assert not (fold / "ae").exists() and not (fold / "ldm").exists()    # the one-pass decoder needs neither
    assert "stages ae and ldm skipped" in captured.out
    assert "case-level validation skipped" in captured.err       # validation was reached (no raw cases here)
    assert main(["1", "2d", "0", "-device", "cpu", "--stage", "ldm", "--no-progress"]) == 2
    assert "stage 'ae' of fold 0 is not trained" in capsys.readouterr().err
    for stage in ("ae", "ldm"):                                   # asked for explicitly, they still train
        assert main(["1", "2d", "0", "-device", "cpu", "--stage", stage, "--no-progress"]) == 0
        assert (fold / stage / "checkpoint_final.pth").is_file()


def test_the_plain_unet_control_trains_one_stage_with_msgldms_whole_budget(msgldm_roots, capsys):
    from msgldm_auto.plans import Plans

    preprocessed = write_preprocessed_dataset(msgldm_roots / "preprocessed")
    plans = Plans.load(preprocessed / "MSGLDMPlans.json")
    config = plans.configuration("2d")
    for stage, minutes in (("ae", 1.0), ("structure", 2.0), ("ldm", 4.0)):
        config.schedule[stage].max_minutes = minutes
    assert config.stage_schedule("unet").max_minutes == 7.0
    config.schedule["structure"].ema_decay = 0.5
    assert config.stage_schedule("unet").ema_decay == 0.5               # the control averages like the disentangler
    config.schedule["structure"].ema_decay = None
    config.ablations.diffusion = False
    assert config.stage_schedule("unet").max_minutes == 2.0          # only what MSG-LDM actually trains
    plans.save(preprocessed / "MSGLDMPlans.json")
    assert main(["1", "2d", "0", "-device", "cpu", "--no-progress", "--method", "unet"]) == 0
    model = msgldm_roots / "results" / "Dataset001_Toy" / "MSGLDMPlans__2d"
    assert load_checkpoint(model / "fold_0" / "unet" / "checkpoint_final.pth")["extra_state"] == {}   # no averaging
    assert [p.name for p in (model / "fold_0").iterdir() if p.is_dir()] == ["unet"]
    log = (model / "fold_0" / "unet" / "training_log.txt").read_text()
    assert "synthesis PSNR (dB)" in log and "it/s" in log and "at most 2 min" in log
    config.ablations.diffusion = True                                # three stages: a per-stage override x 3
    plans.save(preprocessed / "MSGLDMPlans.json")
    assert main(["1", "2d", "1", "-device", "cpu", "--no-progress", "-m", "unet", "--max-minutes", "0.5"]) == 0
    assert "at most 1.5 min" in (model / "fold_1" / "unet" / "training_log.txt").read_text()
    assert main(["1", "2d", "0", "-device", "cpu", "--method", "unet", "--stage", "ae"]) == 2
    assert "--stage ae applies to MSG-LDM" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["7", "2d", "0"], "no dataset with ID 7"),
    (["1", "3d", "0"], "configuration '3d': plans MSGLDMPlans have configuration(s) 2d; pick one"),
    (["1", "2d", "5"], "fold '5' is out of range"),
    (["1", "2d", "0", "--stage", "ldm"], "stage 'ae' of fold 0 is not trained"),
    (["1", "2d", "0", "--epochs", "0"], "--epochs must be positive"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(msgldm_roots, capsys, argv, message):
    preprocessed = write_preprocessed_dataset(msgldm_roots / "preprocessed", num_cases=5)
    assert main(argv + ["-device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (msgldm_roots / "results").exists() and not (preprocessed / "splits_final.json").exists()


def test_torch_threads_are_probed_unless_the_user_chose_them(monkeypatch):
    from msgldm_auto.training import threads

    assert threads.candidate_threads(2, 1) == [2, 1] and threads.candidate_threads(16, 2) == [8, 4, 1]
    assert threads.candidate_threads(1, 1) == [1]
    before = torch.get_num_threads()
    try:
        assert threads.probe_seconds(1) > 0
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.choose_torch_threads(1, "cpu") == f"torch threads: {before} (OMP_NUM_THREADS)"
        monkeypatch.delenv("OMP_NUM_THREADS")
        # A shared machine: two threads are slower than one (the other process holds a core).
        monkeypatch.setattr(threads, "probe_seconds", {2: 0.30, 1: 0.12}.get)
        line = threads.choose_torch_threads(1, "cpu")
        assert torch.get_num_threads() == 1 and line.startswith("torch threads: 1, the fastest")
        monkeypatch.setattr(threads, "probe_seconds", {2: 0.08, 1: 0.12}.get)       # an idle machine
        assert threads.choose_torch_threads(1, "cpu").startswith("torch threads: 2,") and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_mixed_precision_is_bf16_where_the_cpu_computes_it_natively_and_float32_when_asked(monkeypatch, tmp_path):
    from msgldm_auto.training import precision

    cpu = torch.device("cpu")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)   # a torch without the private checks
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not precision.cpu_has_native_bf16()
    assert precision.autocast_dtype(cpu, True) is None
    assert precision.precision_line(cpu, True) == "precision: float32 (this processor has no native bf16 instructions)"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.autocast_dtype(cpu, True) == torch.bfloat16 and precision.autocast_dtype(cpu, False) is None
    assert precision.precision_line(cpu, False) == "precision: float32 (--no-amp)"
    assert precision.precision_line(cpu, True).startswith("mixed precision: bfloat16 autocast on cpu")

    conv, image = torch.nn.Conv2d(6, 8, 3, padding=1), torch.zeros(1, 6, 8, 8)
    for amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        trainer = StageTrainer(TinySynthesisStage(3, 1), TrainerSettings(epochs=1, iterations_per_epoch=1, amp=amp),
                               tmp_path / str(amp), CPU, {})
        with trainer.autocast():
            assert conv(image).dtype == dtype
        assert not any(scaler.is_enabled() for scaler in trainer.scalers.values())  # bf16 needs no loss scaling
    # A whole bf16 run: the weights (and so the checkpoint) stay float32 and finite, the losses are finite.
    weights, result = _tiny_run(tmp_path / "bf16", amp=True)
    history = load_checkpoint(result.checkpoint)["history"]
    assert result.completed and len(history["train_loss"]) == 2 and all(map(math.isfinite, history["train_loss"]))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
