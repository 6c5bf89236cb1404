"""Slice batches for training, on batchgenerators (DataLoader base, Multi/SingleThreadedAugmenter).

Order is a pure function of the seed and the batch number: the slices of the training cases form an endless stream
of seeded permutations; global batch k is stream[k*G : (k+1)*G], and rank r of W takes its contiguous b = G/W share.
So ranks see disjoint slices, one process at the same global batch sees their union, worker threads need no
coordination (worker t builds batches t, t+T, ...; the augmenter returns them in order) and resuming needs only the
batch number. Each sample's availability pattern is drawn from a generator seeded by its stream position.

Slices are read lazily from the per-case blosc2 arrays (a few slices at a time), so memory stays flat as the dataset
grows: only the slice index (two ints per slice) scales with it.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import DataLoader
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.training.augmentation import BACKGROUND, build_transforms
from msgldm_auto.training.patterns import draw_kept

WORKERS_VARIABLE = "MSGLDM_NUM_WORKERS"


class CaseReader(Protocol):
    """Opens a preprocessed case; `.data` (P, Z, H, W) must slice lazily, `.present` names its channel ids,
    `.foreground_slices` the slices to train on and `.seg` is (Z, H, W) or None."""

    def open(self, case_id: str) -> Any: ...


class StorageReader:
    """The real reader: `msgldm_auto.preprocessing.storage.load_case` on one configuration folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def open(self, case_id: str) -> Any:
        from msgldm_auto.preprocessing.storage import load_case

        return load_case(self.folder, case_id)


@dataclass
class SliceIndex:
    case_ids: list[str]
    present: np.ndarray         # (num_cases, M) bool
    slices: np.ndarray          # (N, 2) int64: case number, slice number (foreground slices only)
    has_seg: bool               # every case has a segmentation

    def __len__(self) -> int:
        return len(self.slices)


@dataclass
class SliceBatch:
    images: torch.Tensor        # (B, M, C, H, W) float32 in [-1, 1]
    present: torch.Tensor       # (B, M) bool: the modality exists in the data
    kept: torch.Tensor          # (B, M) bool: the drawn availability pattern (inputs)
    seg: torch.Tensor | None    # (B, H, W) int64
    slice_ids: np.ndarray       # (B, 2) case number, slice number (for tests and logs)

    def to(self, device: torch.device) -> "SliceBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return SliceBatch(move(self.images), move(self.present), move(self.kept), move(self.seg), self.slice_ids)


def default_num_workers() -> int:
    value = os.environ.get(WORKERS_VARIABLE)
    if value is None:
        return max(0, min(4, (os.cpu_count() or 1) - 1))
    if not value.strip().isdigit():
        raise MSGLDMError(f"{WORKERS_VARIABLE}={value!r} must be a non-negative integer (0 = load in the main process)")
    return int(value)


def _present_mask(channel_ids: list[int], num_modalities: int) -> np.ndarray:
    mask = np.zeros(num_modalities, dtype=bool)
    mask[list(channel_ids)] = True
    return mask


def build_slice_index(reader: CaseReader, case_ids: list[str], num_modalities: int) -> SliceIndex:
    """Every foreground slice of the cases that have at least two modalities (one to keep, one to drop)."""
    kept_ids, masks, rows, seg_flags = [], [], [], []
    for case_id in sorted(case_ids):
        case = reader.open(case_id)
        mask = _present_mask(case.present, num_modalities)
        if mask.sum() < 2:
            continue
        rows.extend((len(kept_ids), int(z)) for z in case.foreground_slices)
        kept_ids.append(case_id)
        masks.append(mask)
        seg_flags.append(case.seg is not None)
    if not rows:
        raise MSGLDMError("no training slices: every case of this fold has fewer than two modalities or no head "
                          "voxels; check the preprocessed data")
    return SliceIndex(kept_ids, np.stack(masks), np.asarray(rows, dtype=np.int64), bool(seg_flags) and all(seg_flags))


class SliceReader:
    """Reads one slice with its context neighbours (clamped at the volume's edges) into the (M, C, H, W) layout."""

    def __init__(self, reader: CaseReader, index: SliceIndex, num_modalities: int, context_slices: int):
        self.reader, self.index = reader, index
        self.num_modalities, self.context_slices = num_modalities, context_slices
        self._open_cases: dict[int, Any] = {}   # lazy handles, a few bytes each; the voxels stay on disk

    def _case(self, case_number: int) -> Any:
        if case_number not in self._open_cases:
            self._open_cases[case_number] = self.reader.open(self.index.case_ids[case_number])
        return self._open_cases[case_number]

    def read(self, case_number: int, z: int) -> tuple[np.ndarray, np.ndarray | None]:
        case = self._case(case_number)
        num_slices = int(case.data.shape[1])
        half = self.context_slices // 2
        wanted = np.clip(np.arange(z - half, z + half + 1), 0, num_slices - 1)
        block = np.asarray(case.data[:, int(wanted.min()): int(wanted.max()) + 1], dtype=np.float32)
        block = block[:, wanted - wanted.min()]                     # (P, C, H, W)
        images = np.full((self.num_modalities, *block.shape[1:]), BACKGROUND, dtype=np.float32)
        images[list(case.present)] = block                          # missing modalities stay background, flagged absent
        seg = None if case.seg is None else np.asarray(case.seg[z], dtype=np.int64)
        return images, seg


class SliceStream:
    """Position -> slice number in the endless stream of seeded permutations (pass p uses permutation seed
    (seed, p))."""

    def __init__(self, num_slices: int, seed: int):
        self.num_slices, self.seed = num_slices, seed
        self._cached_pass, self._cached_permutation = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, pass_number: int) -> np.ndarray:
        if pass_number != self._cached_pass:
            self._cached_pass = pass_number
            self._cached_permutation = np.random.default_rng([self.seed, pass_number]).permutation(self.num_slices)
        return self._cached_permutation

    def __getitem__(self, position: int) -> int:
        return int(self._permutation(position // self.num_slices)[position % self.num_slices])


PARENT_POLL_SECONDS = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Start a daemon thread that ends this (worker) process once `parent_pid` is no longer its parent.

    batchgenerators' workers stop when the trainer closes them, but a trainer killed with SIGKILL closes nothing, and a
    worker waiting on its full queue would then live on as an orphan. Its parent changes when the trainer dies.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class SliceDataLoader(DataLoader):
    """batchgenerators loader producing this rank's share of global batch k, for k = start, start+T, ... per thread."""

    def __init__(self, reader: CaseReader, index: SliceIndex, num_modalities: int, context_slices: int,
                 global_batch: int,
                 seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0, num_threads: int = 1):
        if global_batch % world_size:
            raise MSGLDMError(f"batch size {global_batch} is not divisible by {world_size} processes; change "
                              "batch_size in the plans or the process count")
        super().__init__(index, global_batch // world_size, num_threads_in_multithreaded=num_threads, infinite=True,
                         shuffle=False)
        self.indices = np.arange(len(index))
        self.index, self.seed, self.rank, self.global_batch = index, seed, rank, global_batch
        self.start_batch, self._batches_made = start_batch, 0
        self.slice_reader = SliceReader(reader, index, num_modalities, context_slices)
        self.stream = SliceStream(len(index), seed)
        self.parent_pid, self.watched_pid = os.getpid(), os.getpid()   # each worker process watches its parent once

    def positions(self, batch_number: int) -> np.ndarray:
        first = batch_number * self.global_batch + self.rank * self.batch_size
        return np.arange(first, first + self.batch_size)

    def generate_train_batch(self) -> dict[str, Any]:
        if self.watched_pid != os.getpid():
            self.watched_pid = os.getpid()
            exit_with_parent(self.parent_pid)
        batch_number = self.start_batch + self.thread_id + self._batches_made * self.number_of_threads_in_multithreaded
        self._batches_made += 1
        images, segs, present, kept, slice_ids = [], [], [], [], []
        for position in self.positions(batch_number):
            case_number, z = self.index.slices[self.stream[int(position)]]
            image, seg = self.slice_reader.read(int(case_number), int(z))
            mask = self.index.present[case_number]
            images.append(image)
            segs.append(seg)
            present.append(mask)
            kept.append(draw_kept(mask, np.random.default_rng([self.seed, 1, int(position)])))
            slice_ids.append((case_number, z))
        data = np.stack(images)
        batch = {"data": data.reshape(data.shape[0], -1, *data.shape[3:]), "present": np.stack(present),
                 "kept": np.stack(kept), "slice_ids": np.asarray(slice_ids, dtype=np.int64), "shape": data.shape}
        if self.index.has_seg:
            batch["seg"] = np.stack(segs)[:, None]
        return batch


def to_slice_batch(batch: dict[str, Any]) -> SliceBatch:
    shape = tuple(batch["shape"])
    seg = batch.get("seg")
    return SliceBatch(
        images=torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32).reshape(shape)),
        present=torch.from_numpy(np.asarray(batch["present"], dtype=bool)),
        kept=torch.from_numpy(np.asarray(batch["kept"], dtype=bool)),
        seg=None if seg is None else torch.from_numpy(np.asarray(seg[:, 0], dtype=np.int64)),
        slice_ids=np.asarray(batch["slice_ids"]),
    )


class TrainingBatches:
    """An endless iterator of `SliceBatch`; close() stops the worker processes."""

    def __init__(self, loader: SliceDataLoader, augmenter: Any):
        self.loader, self.augmenter = loader, augmenter

    def __iter__(self) -> Iterator[SliceBatch]:
        return self

    def __next__(self) -> SliceBatch:
        return to_slice_batch(next(self.augmenter))

    def close(self) -> None:
        if isinstance(self.augmenter, MultiThreadedAugmenter):
            self.augmenter._finish()


def make_training_batches(reader: CaseReader, index: SliceIndex, num_modalities: int, context_slices: int,
                          image_size: list[int], global_batch: int, seed: int, *, rank: int = 0, world_size: int = 1,
                          start_batch: int = 0, augment: bool = True, slice_axis: int = 2,
                          num_workers: int | None = None) -> TrainingBatches:
    workers = default_num_workers() if num_workers is None else num_workers
    loader = SliceDataLoader(reader, index, num_modalities, context_slices, global_batch, seed, rank, world_size,
                             start_batch, num_threads=max(workers, 1))
    transforms = build_transforms(image_size, context_slices, augment, slice_axis)
    if workers == 0:
        return TrainingBatches(loader, SingleThreadedAugmenter(loader, transforms))
    # Worker seeds depend on where we start, so a resumed run does not replay the first augmentations.
    seeds = [seed + 1000 * rank + 7919 * start_batch + worker for worker in range(workers)]
    augmenter = MultiThreadedAugmenter(loader, transforms, workers, num_cached_per_queue=2, seeds=seeds,
                                       pin_memory=False)
    return TrainingBatches(loader, augmenter)


def validation_batches(reader: CaseReader, index: SliceIndex, num_modalities: int, context_slices: int,
                       batch_size: int, num_slices: int, seed: int) -> list[SliceBatch]:
    """A fixed set of slices spread evenly over the cases, each with a fixed pattern: the per-epoch validation set."""
    slice_reader = SliceReader(reader, index, num_modalities, context_slices)
    chosen = np.unique(np.linspace(0, len(index) - 1, min(num_slices, len(index))).round().astype(np.int64))
    batches = []
    for start in range(0, len(chosen), batch_size):
        rows = [index.slices[i] for i in chosen[start:start + batch_size]]
        samples = [slice_reader.read(int(c), int(z)) for c, z in rows]
        present = np.stack([index.present[c] for c, _ in rows])
        kept = np.stack([draw_kept(mask, np.random.default_rng([seed, 2, int(i)])) for mask, i in zip(present,
                                                                                                      chosen[start:])])
        data = np.stack([image for image, _ in samples])
        batch = {"data": data, "present": present, "kept": kept, "slice_ids": np.asarray(rows), "shape": data.shape}
        if index.has_seg:
            batch["seg"] = np.stack([seg for _, seg in samples])[:, None]
        batches.append(to_slice_batch(batch))
    return batches
