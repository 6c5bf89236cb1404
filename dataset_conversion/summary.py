"""The conversion summary: cases found, cases per modality pattern, quirks handled, skipped files and why."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from dataset_conversion.common import SkippedFile, SourceDataset

SHOWN_PER_REASON = 10
LOG_NAME = "conversion_log.txt"


def format_summary(source: SourceDataset, result, source_root: Path, complete: bool = False) -> str:
    """Human-readable summary; `complete` lists every skipped file (for the log), otherwise a few per reason."""
    lines = [
        f"{source.kind}: {source_root} -> {result.dataset_folder}",
        f"cases found: {len(source.cases)}  (imagesTr {len(result.training_cases)}, imagesTs {len(result.test_cases)})",
        "cases per modality:",
    ]
    width = max(len(c) for c in source.channel_names)
    for channel in source.channel_names:
        pattern = source.patterns.get(channel, "")
        lines.append(f"  {channel:<{width}}  {result.files_by_channel.get(channel, 0):>5}  {pattern}")
    if source.labels is not None:
        lines.append(f"labels: {result.labels_written} written, declared {source.labels}")
        if source.label_mapping and any(k != v for k, v in source.label_mapping.items()):
            remap = ", ".join(f"{k}->{v}" for k, v in sorted(source.label_mapping.items()))
            lines.append(f"  label values remapped: {remap}")
        unlabelled = [c for c in result.test_cases if c in _cases_without_label(source)]
        if unlabelled:
            lines.append(f"  {len(unlabelled)} case(s) without a segmentation went to imagesTs (e.g. a validation set)")
    lines += _section("release quirks handled", source.notes, complete)
    lines += _section("notes", result.notes, complete)
    lines += _skipped_section(source.skipped, source_root, complete)
    return "\n".join(lines)


def _cases_without_label(source: SourceDataset) -> set[str]:
    return {c.case_id for c in source.cases if c.label is None}


def _section(title: str, items: list[str], complete: bool) -> list[str]:
    if not items:
        return []
    shown = items if complete else items[:SHOWN_PER_REASON * 2]
    lines = [f"{title} ({len(items)}):"] + [f"  - {item}" for item in shown]
    if len(shown) < len(items):
        lines.append(f"  ... and {len(items) - len(shown)} more (see {LOG_NAME} in the dataset folder)")
    return lines


def _skipped_section(skipped: list[SkippedFile], root: Path, complete: bool) -> list[str]:
    if not skipped:
        return ["skipped files: none"]
    by_reason: dict[str, list[Path]] = defaultdict(list)
    for item in skipped:
        by_reason[item.reason].append(item.path)
    lines = [f"skipped files ({len(skipped)}):"]
    for reason, paths in by_reason.items():
        lines.append(f"  {reason}: {len(paths)}")
        shown = paths if complete else paths[:SHOWN_PER_REASON]
        lines += [f"    {_relative(p, root)}" for p in shown]
        if len(shown) < len(paths):
            lines.append(f"    ... and {len(paths) - len(shown)} more (see {LOG_NAME} in the dataset folder)")
    return lines


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
