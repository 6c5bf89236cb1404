"""Checkpoints: plain dicts of tensors and built-in types, written atomically, read with `weights_only=True`.

Layout (documentation/internals.md, "Results"): `{"stage", "epoch", "inference_weights", "network_weights",
"optimizer_state", ..., "plans_name", "configuration", "fold"}`. Resuming also needs the RNG states of torch,
numpy and Python; they are converted to tensors/lists here so the safe loader accepts them.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msgldm_auto.atomic import atomic_path
from msgldm_auto.errors import MSGLDMError

CHECKPOINT_NAMES = {"latest": "checkpoint_latest.pth", "best": "checkpoint_best.pth", "final": "checkpoint_final.pth"}


def checkpoint_path(stage_folder: Path, which: str) -> Path:
    return Path(stage_folder) / CHECKPOINT_NAMES[which]


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write to a temporary name in the same folder, flush to disk, then rename: a kill leaves the old file intact."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MSGLDMError(f"{path}: checkpoint not found; train that stage first (msgldm_train ... --stage <stage>)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, do not dump a pickle traceback
        raise MSGLDMError(f"{path}: not a readable msgldm checkpoint ({type(err).__name__}); delete it and retrain "
                          "that stage") from None


def capture_rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    python_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": python_state[0], "state": list(python_state[1]), "gauss": python_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    # Checkpoints are loaded with map_location=<training device>; generator states must come back as CPU byte tensors.
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].cpu().numpy().astype(np.uint32),
                         numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes so weights load into plain modules."""
    def clean(key: str) -> str:
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        return key

    return {clean(k): v for k, v in state_dict.items()}
