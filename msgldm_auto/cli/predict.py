"""`msgldm_predict`: synthesize every missing contrast of every case in INPUT (DESIGN §7,
documentation/inference.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msgldm_auto.cli._common import add_model_arguments, entry_point, print_roots, resolve_device
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.inference.choices import NOISE_STRATEGIES
from msgldm_auto.plans import METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgldm_predict",
                                     description="Synthesize the missing MRI contrasts of every case in INPUT.")
    parser.add_argument("-i", nargs="+", required=True, metavar="INPUT",
                        help="folder of {CASE}_{CHANNEL:04d} images, or one case's files")
    parser.add_argument("-o", required=True, metavar="OUTPUT", help="output folder (must differ from the input folder)")
    add_model_arguments(parser)
    parser.add_argument("--targets", nargs="+", default=None, metavar="MODALITY",
                        help="modalities to synthesize (names or channel numbers; default: every missing one)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the plans' value)")
    parser.add_argument("--num-samples", "--num_samples", dest="num_samples", type=int, default=None,
                        help="diffusion samples averaged per fold (default 1)")
    parser.add_argument("--save-std", "--save_std", dest="save_std", action="store_true",
                        help="write per-voxel std maps to OUTPUT/uncertainty/")
    parser.add_argument("--complete", action="store_true",
                        help="also copy the present modalities into OUTPUT (a complete set for nnU-Net)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default: 0)")
    parser.add_argument("-device", "--device", dest="device", default=None,
                        help="cpu, cuda or mps (default: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--continue_prediction", "--continue-prediction", "--c", dest="continue_prediction",
                        action="store_true",
                        help="skip cases already finished in OUTPUT")
    parser.add_argument("--resample-mismatched", "--resample_mismatched", dest="resample_mismatched",
                        action="store_true",
                        help="resample images that are not on the grid of the case's first modality instead of failing "
                             "the case")
    parser.add_argument("--preview", action="store_true",
                        help="write OUTPUT/previews/{CASE}.png (three orthogonal planes)")
    parser.add_argument("--one-pass", "--one_pass", "--no-diffusion", "--no_diffusion", dest="one_pass",
                        action="store_true",
                        help="fast mode: the disentangler's one-pass decoder, no diffusion")
    parser.add_argument("-m", "--method", default=None, choices=METHODS,
                        help="msgldm (default) or unet: the plain UNet control (trained by msgldm_train ... -m unet)")
    parser.add_argument("--mode", default=None, metavar="MODE",
                        help="a mode of msgldm_find_best_configuration's table (one_pass, diffusion, diffusion_meanK, "
                             "unet); default: the mode it chose, else diffusion when trained, else the one-pass "
                             "decoder")
    parser.add_argument("--noise", default="shared", choices=NOISE_STRATEGIES,
                        help="one noise draw for all slices (shared) or one per slice")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                        help="slices per forward pass")
    parser.add_argument("--disable_tta", "--disable-tta", dest="mirror", action="store_false",
                        help="no test-time mirroring: the one-pass decoder and the control then run once per slice "
                             "instead of averaging two passes over the left-right mirror")
    parser.add_argument("--no_percentile_match", "--no-percentile-match", dest="match_percentile",
                        action="store_false",
                        help="keep each synthesis's brightest voxels as the network gave them instead of stretching "
                             "the top 5 %% so that its p99.5 inside the head is the dataset's, as a real scan's")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch and MONAI load only now, so that `--help` and argument errors are instant.
    from msgldm_auto.inference.model_loading import find_model_folder
    from msgldm_auto.inference.predictor import MSGLDMPredictor, PredictionOptions, apply_mode_choice

    print_roots()
    model_folder = find_model_folder(args.dataset, args.configuration, args.plans)
    options = PredictionOptions(steps=args.steps, num_samples=args.num_samples or 1, seed=args.seed,
                                one_pass=args.one_pass, method=args.method or "msgldm", noise=args.noise,
                                batch_size=args.batch_size, resample_mismatched=args.resample_mismatched,
                                mirror=args.mirror, match_percentile=args.match_percentile)
    explicit = args.one_pass or args.method is not None or args.num_samples is not None or args.steps is not None
    options, mode, note = apply_mode_choice(options, model_folder, args.mode, explicit)
    if note:
        print(note)
    device = resolve_device(args.device)
    predictor = MSGLDMPredictor.from_trained_folder(model_folder, args.folds, args.checkpoint, device, options)
    if mode is not None and mode.predictor_mode != predictor.mode:
        raise MSGLDMError(f"mode {mode.name}: folds {' '.join(predictor.folds)} cannot run it (no trained "
                          f"{'LDM' if mode.predictor_mode == 'diffusion' else mode.stages[0]}); train it, choose other "
                          "folds with -f, or another mode with --mode")
    modes = {"diffusion": f"diffusion, {predictor.steps} steps x {predictor.samples} sample(s)",
             "one_pass": "one-pass decoder", "unet": "plain UNet control"}
    mode = modes[predictor.mode] + (", mirrored" if predictor.mirrors else "")
    print(f"model {model_folder}  folds {' '.join(predictor.folds)}  checkpoint {args.checkpoint}  ({mode})")
    inputs = [Path(p) for p in args.i]
    report = predictor.predict_folder(inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else inputs, Path(args.o),
                                      targets=args.targets, complete=args.complete, save_std=args.save_std,
                                      continue_prediction=args.continue_prediction, preview=args.preview)
    print(f"predicted {len(report.predicted)} case(s), skipped {len(report.skipped)} finished, failed "
          f"{len(report.failed)}; outputs in {args.o}")
    for case_id, message in report.failed.items():
        print(f"FAILED {case_id}: {message}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
