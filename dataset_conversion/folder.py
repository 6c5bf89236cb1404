"""Any folder of images: `--modality T1='*_t1w.nii.gz' --modality FLAIR='*_flair.nii.gz' [--label '*_seg.nii.gz']`.

A pattern without '/' is matched against file names anywhere below the source, one with '/' against the path relative
to the source. The case ID is, by default, the text the pattern's first '*' matched (`sub-01_t1w.nii.gz` -> `sub-01`);
`--case-id parent` takes the parent folder's name and any other value is a regex with one group, searched in the
relative path. Label values are mapped to 0..K in sorted order (the mapping is written to dataset.json).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_conversion.common import (
    SkippedFile,
    SourceCase,
    SourceDataset,
    add_image,
    require_source_folder,
    safe_case_id,
    walk_files,
)
from msgldm_auto.dataset.image_io import read_image
from msgldm_auto.errors import MSGLDMError

PARENT_RULE = "parent"
LABEL = "<label>"


@dataclass(frozen=True)
class FilePattern:
    role: str          # channel name or LABEL
    glob: str
    regex: re.Pattern

    def match(self, relative: str) -> re.Match | None:
        target = relative if "/" in self.glob else relative.rsplit("/", 1)[-1]
        return self.regex.fullmatch(target)


def glob_to_regex(glob: str) -> re.Pattern:
    """Shell glob -> regex in which every '*' is a capturing group ('**' may cross folders)."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif glob[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and "]" in glob[i + 1:]:
            end = glob.index("]", i + 1)
            out.append("[" + glob[i + 1:end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def parse_modality_options(values: list[str]) -> list[tuple[str, str]]:
    """`["T1=*_t1.nii.gz", ...]` -> [("T1", "*_t1.nii.gz"), ...] in the given (= channel) order."""
    pairs = []
    for value in values or []:
        name, sep, glob = value.partition("=")
        name, glob = name.strip(), glob.strip().strip("'\"")
        if not sep or not name or not glob:
            raise MSGLDMError(f"--modality {value!r}: expected NAME=GLOB, e.g. --modality T1='*_t1w.nii.gz'")
        if any(name == n for n, _ in pairs):
            raise MSGLDMError(f"--modality {name} is given twice; give each modality one pattern")
        pairs.append((name, glob))
    if not pairs:
        raise MSGLDMError("folder conversion needs at least one --modality NAME='GLOB', e.g. --modality "
                          "T1='*_t1w.nii.gz'")
    return pairs


def read_folder(source: Path, modalities: list[tuple[str, str]], case_id_rule: str | None = None,
                label_glob: str | None = None) -> SourceDataset:
    root = require_source_folder(source)
    patterns = [FilePattern(name, glob, glob_to_regex(glob)) for name, glob in modalities]
    if label_glob:
        patterns.append(FilePattern(LABEL, label_glob, glob_to_regex(label_glob)))
    case_id_of = _case_id_function(case_id_rule, patterns)
    dataset = SourceDataset(
        kind="folder", channel_names=[name for name, _ in modalities], cases=[], default_name=_default_name(root),
        description=f"converted from {root.name}", patterns=dict(modalities),
    )
    cases: dict[str, SourceCase] = {}
    for path in walk_files(root):
        relative = path.relative_to(root).as_posix()
        hits = [(p, m) for p in patterns if (m := p.match(relative))]
        if not hits:
            dataset.skipped.append(SkippedFile(path, "matches no --modality or --label pattern"))
            continue
        if len(hits) > 1:
            raise MSGLDMError(f"{path}: matches several patterns ({', '.join(p.glob for p, _ in hits)}); make them "
                              "more specific")
        pattern, match = hits[0]
        case_id = case_id_of(relative, pattern, match)
        case = cases.setdefault(case_id, SourceCase(case_id, {}))
        if pattern.role == LABEL:
            _set_label(case, path)
        else:
            add_image(case, pattern.role, path)
    dataset.cases = [cases[k] for k in sorted(cases) if cases[k].images]
    dataset.skipped.extend(SkippedFile(c.label, "label without any image of its case")
                           for k, c in sorted(cases.items()) if not c.images and c.label is not None)
    if not dataset.cases:
        raise MSGLDMError(f"{root}: no file matches {', '.join(g for _, g in modalities)}; check the --modality "
                          "patterns")
    if label_glob:
        _declare_labels(dataset)
    return dataset


def _default_name(root: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", root.name) or "Converted"


def _set_label(case: SourceCase, path: Path) -> None:
    if case.label is not None:
        raise MSGLDMError(f"case {case.case_id}: two label files ({case.label} and {path}); use a more specific "
                          "--label")
    case.label = path


def _case_id_function(rule: str | None, patterns: list[FilePattern]):
    if rule == PARENT_RULE:
        return lambda relative, pattern, match: safe_case_id(Path(relative).parent.name or "root")
    if rule:
        try:
            regex = re.compile(rule)
        except re.error as err:
            raise MSGLDMError(f"--case-id {rule!r}: not a valid regex ({err}); use one group, e.g. '(sub-\\d+)', or "
                              "'parent'") from None
        if regex.groups != 1:
            raise MSGLDMError(f"--case-id {rule!r}: needs exactly one group (has {regex.groups}), e.g. '(sub-\\d+)'")
        return lambda relative, pattern, match: _case_id_from_regex(regex, relative)
    for pattern in patterns:
        if "*" not in pattern.glob:
            raise MSGLDMError(f"pattern {pattern.glob!r} has no '*' to take the case ID from; add --case-id parent or "
                              "--case-id REGEX")
    return lambda relative, pattern, match: safe_case_id(match.group(1))


def _case_id_from_regex(regex: re.Pattern, relative: str) -> str:
    match = regex.search(relative)
    if match is None or not match.group(1):
        raise MSGLDMError(f"--case-id {regex.pattern!r} does not match {relative}; adjust the regex (it is searched in "
                          "the path)")
    return safe_case_id(match.group(1))


def _declare_labels(dataset: SourceDataset) -> None:
    """Read every label once to learn its values; map them to 0..K so that the stored labels are contiguous."""
    values: set[int] = {0}
    for case in dataset.cases:
        if case.label is None:
            continue
        found = np.unique(read_image(case.label).array)
        if not np.all(np.isclose(found, np.rint(found))):
            raise MSGLDMError(f"{case.label}: label file holds non-integer values; a segmentation must contain "
                              "integers only")
        values.update(int(v) for v in np.rint(found))
    ordered = sorted(values)
    if ordered[0] < 0 or len(ordered) > 256:
        raise MSGLDMError(f"labels hold values {ordered[:5]}...; expected at most 255 non-negative classes")
    dataset.label_mapping = {value: index for index, value in enumerate(ordered)}
    dataset.labels = {"background" if v == 0 else f"label_{v}": i for v, i in dataset.label_mapping.items()}
