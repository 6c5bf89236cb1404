"""What every entry point shares: user errors as one line on stderr with exit status 2, the data roots banner, and
the nnU-Net flags that pick a dataset and a trained model (`-d -c -p -f -chk`), spelled and explained the same way in
every command."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.choices import CHECKPOINT_CHOICES
from msgldm_auto.paths import roots
from msgldm_auto.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS_NAME

DATASET_HELP = "dataset ID (e.g. 1) or name (Dataset001_Name)"
PLANS_HELP = f"plans name (default: {DEFAULT_PLANS_NAME}; plans made with -pl cpu are {DEFAULT_PLANS_NAME}_cpu)"
CONFIGURATION_HELP = f"planned configuration (default: {DEFAULT_CONFIGURATION})"
FOLDS_HELP = "folds 0..4 and/or all; several are ensembled (default: every trained fold)"
CHECKPOINT_HELP = "checkpoint of every stage (default: final)"

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


def add_dataset_argument(parser: argparse.ArgumentParser, nargs: str | None = None) -> None:
    parser.add_argument("-d", "--dataset", dest="dataset", required=True, nargs=nargs, metavar="DATASET",
                        help=DATASET_HELP)


def add_plans_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--plans", "--plans-name", "-plans_name", dest="plans", default=DEFAULT_PLANS_NAME,
                        metavar="PLANS", help=PLANS_HELP)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`-d -c -p -f -chk`: the trained model a command uses (MSGLDM_RESULTS/DATASET/PLANS__CONFIG), folds,
    checkpoint."""
    add_dataset_argument(parser)
    parser.add_argument("-c", "--configuration", dest="configuration", default=DEFAULT_CONFIGURATION, metavar="CONFIG",
                        help=CONFIGURATION_HELP)
    add_plans_argument(parser)
    parser.add_argument("-f", "--folds", dest="folds", nargs="+", default=None, metavar="FOLD", help=FOLDS_HELP)
    parser.add_argument("-chk", "--checkpoint", dest="checkpoint", default="final", choices=CHECKPOINT_CHOICES,
                        help=CHECKPOINT_HELP)


def print_roots() -> None:
    print(roots().describe())


def resolve_device(requested: str | None) -> str:
    """`-device` default: cuda when torch sees a GPU, else cpu (nnU-Net always defaults to cuda; we run anywhere)."""
    if requested:
        return requested
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device} (choose with -device cpu|cuda|mps)")
    return device
