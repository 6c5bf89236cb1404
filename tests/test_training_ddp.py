"""DDP on CPU: two gloo processes train the tiny stand-in; their slice shards are disjoint and the weights match one
process at the same global batch (within float tolerance)."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from training_standins import MemoryReader, TinySynthesisStage, smooth_case  # noqa: E402

from msgldm_auto.training.data_loader import build_slice_index, make_training_batches  # noqa: E402
from msgldm_auto.training.ddp import DistributedContext, init_distributed, shutdown  # noqa: E402
from msgldm_auto.training.trainer import StageTrainer, TrainerSettings  # noqa: E402

GLOBAL_BATCH = 4


class RecordingBatches:
    """Wraps the training batches to record which slices this rank trained on."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.inner)
        self.seen.extend(tuple(int(v) for v in row) for row in batch.slice_ids)
        return batch

    def close(self):
        self.inner.close()


def train(context: DistributedContext, folder: Path) -> tuple[dict, list]:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    reader = MemoryReader({f"c{i}": smooth_case([0, 1, 2], rng, num_slices=4) for i in range(4)})   # 16 slices
    index = build_slice_index(reader, list(reader.cases), 3)
    recorded = []

    def make(start):
        batches = RecordingBatches(make_training_batches(reader, index, 3, 1, [8, 8], GLOBAL_BATCH, seed=0,
                                                         rank=context.rank,
                                                         world_size=context.world_size, start_batch=start,
                                                         augment=False,
                                                         num_workers=0))
        recorded.append(batches)
        return batches

    stage = TinySynthesisStage(3, 1, seed=0)
    # float32: the comparison with one process is to 1e-5, finer than bf16 autocast's rounding on a CPU that has it
    settings = TrainerSettings(epochs=1, iterations_per_epoch=4, checkpoint_every=1, show_progress=False, amp=False)
    StageTrainer(stage, settings, folder, context, {"fold": "0"}).fit(make, [])
    return {k: v.detach().clone() for k, v in stage.networks["net"].state_dict().items()}, recorded[0].seen


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    context = init_distributed("cpu")
    try:
        weights, seen = train(context, Path(folder) / "run")
        torch.save({"weights": weights, "seen": torch.tensor(seen)}, Path(folder) / f"rank{rank}.pt")
    finally:
        shutdown(context)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_see_disjoint_slices_and_match_one_process(tmp_path):
    # fork: the children inherit the imported modules instead of paying torch's import again.
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    seen = [{tuple(row.tolist()) for row in r["seen"]} for r in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 8                 # global batch 4 split over 2 ranks
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 16              # one pass, disjoint shards
    single, single_seen = train(DistributedContext(0, 1, 0, torch.device("cpu")), tmp_path / "single")
    assert set(single_seen) == seen[0] | seen[1]
    for name, value in single.items():
        assert torch.allclose(ranks[0]["weights"][name], value, atol=1e-5), name
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name])
    assert (tmp_path / "run" / "checkpoint_final.pth").is_file()               # written by rank 0
