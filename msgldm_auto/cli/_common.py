"""What every entry point shares: user errors as one line on stderr with exit status 2, and the data roots banner."""
from __future__ import annotations

import functools
import sys
from typing import Callable

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.paths import roots

EXIT_USER_ERROR = 2


def entry_point(func: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap `main(argv) -> int` so a `MSGLDMError` prints `ERROR: <message>` and returns 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return int(func(argv) or 0)
        except MSGLDMError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("ERROR: interrupted", file=sys.stderr)
            return 130

    return wrapper


def print_roots() -> None:
    print(roots().describe())


def not_built_yet(command: str) -> int:
    print(f"{command}: not built yet", file=sys.stderr)
    return EXIT_USER_ERROR


def resolve_device(requested: str | None) -> str:
    """`-device` default: cuda when torch sees a GPU, else cpu (nnU-Net always defaults to cuda; we run anywhere)."""
    if requested:
        return requested
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device} (choose with -device cpu|cuda|mps)")
    return device
