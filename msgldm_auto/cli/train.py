"""`msgldm_train DATASET CONFIG FOLD`: train the three MSG-LDM stages of one fold (or `all`), resumable with --c.

Multi-GPU / multi-node: `torchrun --nproc_per_node N -m msgldm_auto.cli.train DATASET CONFIG FOLD -device cuda`.
"""
from __future__ import annotations

import argparse
import os

from msgldm_auto.cli._common import DATASET_HELP, add_plans_argument, entry_point, print_roots, resolve_device
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.plans import DEFAULT_CONFIGURATION, METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgldm_train",
                                     description="Train MSG-LDM (autoencoder, disentangler, latent diffusion) on one "
                                                 "fold.")
    parser.add_argument("dataset", help=DATASET_HELP)
    parser.add_argument("configuration", help=f"planned configuration, e.g. {DEFAULT_CONFIGURATION}")
    parser.add_argument("fold", help="0..4, or 'all' to train on every case")
    parser.add_argument("--stage", default="all", choices=["ae", "structure", "ldm", "all"],
                        help="stage(s) to train (default: all, in order)")
    parser.add_argument("-m", "--method", default="msgldm", choices=METHODS,
                        help="msgldm (default), or unet: the plain UNet control, one stage with MSG-LDM's whole budget")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per stage (default: the plans' schedule)")
    parser.add_argument("--iters-per-epoch", "--iters_per_epoch", dest="iters_per_epoch", type=int, default=None,
                        help="iterations per epoch (default: the plans' schedule)")
    parser.add_argument("--max-minutes", "--max_minutes", dest="max_minutes", type=float, default=None,
                        help="wall-clock budget per stage; the stage ends cleanly at a checkpoint (default: the "
                             "plans')")
    parser.add_argument("--c", "--continue", "--continue_training", dest="resume", action="store_true",
                        help="continue from the latest checkpoints (finished stages are skipped)")
    parser.add_argument("--val", action="store_true", help="only run the fold validation of the trained model")
    parser.add_argument("--val-cases", "--val_cases", dest="val_cases", type=int, default=None,
                        help="validate on at most this many held-out cases after training (default: all of the fold's)")
    parser.add_argument("-device", "--device", dest="device", default=None, choices=["cpu", "cuda", "mps"],
                        help="default: cuda when a GPU is visible, else cpu")
    add_plans_argument(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of model initialisation, batch order and augmentation")
    parser.add_argument("--no-amp", "--no_amp", dest="amp", action="store_false",
                        help="train in float32 (default: bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (CUDA only)")
    parser.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false",
                        help="no progress bars")
    return parser


def _check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, value in (("--epochs", args.epochs), ("--iters-per-epoch", args.iters_per_epoch),
                        ("--max-minutes", args.max_minutes),
                        ("--val-cases", args.val_cases)):
        if value is not None and value <= 0:
            raise MSGLDMError(f"{flag} must be positive, got {value}")


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_positive(parser, args)
    from msgldm_auto.training.fold_training import TrainingRequest, train_fold
    from msgldm_auto.training.threads import choose_torch_threads

    device = resolve_device(args.device)
    threads = choose_torch_threads(int(os.environ.get("WORLD_SIZE", "1")), device)
    if int(os.environ.get("RANK", "0")) == 0:
        print_roots()
        print(threads)
    request = TrainingRequest(
        dataset=args.dataset, configuration=args.configuration, fold=args.fold, stage=args.stage, method=args.method,
        plans_name=args.plans,
        epochs=args.epochs, iterations_per_epoch=args.iters_per_epoch, max_minutes=args.max_minutes, resume=args.resume,
        validation_only=args.val, device=device, seed=args.seed, amp=args.amp, compile=args.compile,
        show_progress=args.progress, validation_cases=args.val_cases,
    )
    train_fold(request)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
