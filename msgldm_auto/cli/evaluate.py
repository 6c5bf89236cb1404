"""`msgldm_evaluate -ref REF -pred PRED [-d ID] [--mask DIR] [--labels DIR] [-o summary.json]`: score syntheses."""
from __future__ import annotations

import argparse
from pathlib import Path

from msgldm_auto.cli._common import DATASET_HELP, entry_point, print_roots
from msgldm_auto.dataset.dataset_json import DatasetJson
from msgldm_auto.errors import MSGLDMError
from msgldm_auto.evaluation import evaluate_folder, format_table
from msgldm_auto.paths import preprocessed_dataset_folder, raw_dataset_folder, results_dataset_folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgldm_evaluate",
        description="PSNR / SSIM / MAE (BraSyn-style) of synthesized contrasts against reference images.")
    parser.add_argument("-ref", "--ref", required=True, type=Path, help="folder of true images {CASE}_{CHANNEL:04d}")
    parser.add_argument("-pred", "--pred", required=True, type=Path, help="folder written by msgldm_predict")
    parser.add_argument("-d", "--dataset", metavar="DATASET",
                        help=f"{DATASET_HELP}: modality names and file ending from its dataset.json")
    parser.add_argument("--mask", "--mask_dir", type=Path,
                        help="brain masks {CASE}{file_ending} (default: reference > 0)")
    parser.add_argument("--labels", "--labels_dir", type=Path, help="tumour labels {CASE}{file_ending}; > 0 = tumour")
    parser.add_argument("-o", "--output", type=Path, help="summary JSON (default: PRED/summary.json)")
    parser.add_argument("--file-ending", "--file_ending", "-fe", dest="file_ending",
                        help="image file ending (default: the dataset's, else .nii.gz)")
    parser.add_argument("--slice-axis", "--slice_axis", dest="slice_axis", type=int, choices=(0, 1, 2),
                        help="numpy array axis across slices (default: the coarsest-spacing axis, 0 if isotropic)")
    return parser


def _dataset_json(identifier: str | None) -> DatasetJson | None:
    if identifier is None:
        return None
    # A model installed from a zip has no raw folder, so the preprocessed and results copies count too.
    folders = [raw_dataset_folder(identifier), preprocessed_dataset_folder(identifier),
               results_dataset_folder(identifier)]
    for folder in folders:
        if (folder / "dataset.json").is_file():
            return DatasetJson.load(folder / "dataset.json")
    raise MSGLDMError(f"-d {identifier}: no dataset.json in {folders[0]} (nor the preprocessed/results copies); "
                      "check MSGLDM_RAW or leave out -d")


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print_roots()
    output = args.output or args.pred / "summary.json"
    summary = evaluate_folder(args.ref, args.pred, dataset=_dataset_json(args.dataset), mask_dir=args.mask,
                              labels_dir=args.labels, file_ending=args.file_ending, slice_axis=args.slice_axis,
                              output_file=output)
    print(format_table(summary))
    if summary["missing_predictions"]:
        print(f"warning: {len(summary['missing_predictions'])} reference file(s) have no prediction, e.g. "
              f"{summary['missing_predictions'][0]}")
    print(f"summary written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
