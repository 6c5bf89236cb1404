"""Mixed precision on CUDA: bf16 autocast where the GPU has it, fp16 with a gradient scaler where it does not.

Skipped without a GPU (CI has none); on a lent GPU run `python -m pytest tests/test_gpu.py -p no:cacheprovider`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_standins import MemoryReader, TinySynthesisStage, smooth_case  # noqa: E402

from msgldm_auto.training.checkpoint import load_checkpoint  # noqa: E402
from msgldm_auto.training.data_loader import build_slice_index, make_training_batches, validation_batches  # noqa: E402
from msgldm_auto.training.ddp import DistributedContext  # noqa: E402
from msgldm_auto.training.trainer import StageTrainer, TrainerSettings  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _train_on_cuda(folder: Path, amp: bool):
    cuda = DistributedContext(0, 1, 0, torch.device("cuda"))
    reader = MemoryReader({f"c{i}": smooth_case([0, 1, 2], np.random.default_rng(i)) for i in range(4)})
    index = build_slice_index(reader, list(reader.cases), 3)
    stage = TinySynthesisStage(3, 1)
    stage.networks["net"].cuda()
    before = {k: v.detach().clone() for k, v in stage.networks["net"].state_dict().items()}
    settings = TrainerSettings(epochs=2, iterations_per_epoch=5, checkpoint_every=1, show_progress=False, amp=amp)
    trainer = StageTrainer(stage, settings, folder, cuda, {"fold": "0"})
    result = trainer.fit(lambda start: make_training_batches(reader, index, 3, 1, [8, 8], 4, seed=0,
                                                             start_batch=start, num_workers=0),
                         validation_batches(reader, index, 3, 1, 4, 8, seed=0))
    return trainer, result, before, stage.networks["net"].state_dict()


def test_amp_autocasts_to_bf16_where_supported_and_trains(tmp_path):
    trainer, result, before, after = _train_on_cuda(tmp_path, amp=True)
    with trainer.autocast():
        assert torch.get_autocast_dtype("cuda") == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert result.completed and all(torch.isfinite(v).all() for v in after.values())
    assert not all(torch.equal(before[k], after[k]) for k in before)


def test_fp16_gradient_scaler_is_on_without_bf16_and_its_state_is_checkpointed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    trainer, result, _, after = _train_on_cuda(tmp_path, amp=True)
    assert trainer.scalers["net"].is_enabled() and result.completed
    assert all(torch.isfinite(v).all() for v in after.values())
    state = load_checkpoint(tmp_path / "checkpoint_final.pth")["grad_scaler_state"]["net"]
    assert state["scale"] > 0


def test_without_amp_the_scaler_is_off_and_training_runs_in_fp32(tmp_path):
    trainer, result, _, after = _train_on_cuda(tmp_path, amp=False)
    assert not trainer.scalers["net"].is_enabled() and result.completed
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
