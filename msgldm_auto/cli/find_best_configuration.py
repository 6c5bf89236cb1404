"""`msgldm_find_best_configuration DATASET`: choose, from the folds' validation, how the trained model predicts."""
from __future__ import annotations

import argparse
import sys

from msgldm_auto.cli._common import (
    CHECKPOINT_HELP,
    CONFIGURATION_HELP,
    DATASET_HELP,
    add_plans_argument,
    entry_point,
    print_roots,
    resolve_device,
)
from msgldm_auto.evaluation.model_choice import DEFAULT_SAMPLES
from msgldm_auto.inference.choices import CHECKPOINT_CHOICES
from msgldm_auto.plans import DEFAULT_CONFIGURATION


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgldm_find_best_configuration",
        description="Validate every prediction mode the trained model can run (one-pass decoder, diffusion, mean of K "
                    "diffusion samples, plain UNet control) on the folds' held-out cases and choose the one "
                    "msgldm_predict uses by default.")
    parser.add_argument("dataset", help=DATASET_HELP)        # positional, as in nnU-Net's find_best_configuration
    parser.add_argument("-c", "--configuration", dest="configuration", default=DEFAULT_CONFIGURATION,
                        metavar="CONFIG", help=CONFIGURATION_HELP)
    add_plans_argument(parser)
    parser.add_argument("-f", "--folds", dest="folds", nargs="+", default=None, metavar="FOLD",
                        help="folds to compare on (default: every numbered fold that every mode can run)")
    parser.add_argument("-chk", "--checkpoint", dest="checkpoint", default="final", choices=CHECKPOINT_CHOICES,
                        help=CHECKPOINT_HELP)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"K of the 'mean of K diffusion samples' mode (default {DEFAULT_SAMPLES})")
    parser.add_argument("--max-cases", "--max_cases", dest="max_cases", type=int, default=None,
                        help="validate at most this many held-out cases per fold (default: all)")
    parser.add_argument("--revalidate", action="store_true", help="validate again instead of reusing earlier results")
    parser.add_argument("-device", "--device", dest="device", default=None, help="cpu, cuda or mps")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from msgldm_auto.errors import MSGLDMError
    from msgldm_auto.evaluation.model_choice import CHOICE_FILE, format_choice
    from msgldm_auto.inference.model_loading import find_model_folder
    from msgldm_auto.training.best_configuration import BestConfigurationRequest, find_best_configuration

    if args.samples < 2:
        raise MSGLDMError(f"--samples {args.samples}: the mean-of-samples mode needs at least 2 (one is 'diffusion')")
    print_roots()
    model_folder = find_model_folder(args.dataset, args.configuration, args.plans)
    request = BestConfigurationRequest(model_folder, args.folds, args.checkpoint, args.samples,
                                       resolve_device(args.device), args.max_cases, args.revalidate)
    choice = find_best_configuration(request)
    print(format_choice(choice))
    print(f"written: {model_folder / CHOICE_FILE} (msgldm_predict uses it; --mode or --one-pass/-m override it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
