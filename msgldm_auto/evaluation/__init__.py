"""Evaluation: BraSyn-style metrics, folder evaluation, summary tables and preview PNGs. Compares images, never
models."""
from msgldm_auto.evaluation.folder import evaluate_folder
from msgldm_auto.evaluation.metrics import PSNR_CAP_DB, evaluate_volumes
from msgldm_auto.evaluation.previews import save_preview
from msgldm_auto.evaluation.table import format_table

__all__ = ["evaluate_folder", "evaluate_volumes", "format_table", "save_preview", "PSNR_CAP_DB"]
