"""Reading `predictions.json` (written by `msgldm_predict`, format fixed in documentation/internals.md)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgldm_auto.errors import MSGLDMError
from msgldm_auto.json_files import load_json

PREDICTIONS_FILE = "predictions.json"


@dataclass
class CaseAvailability:
    present: list[str]          # modality names given to the model
    synthesized: list[str]      # modality names the model wrote


@dataclass
class PredictionsRecord:
    channel_names: dict[int, str] | None
    cases: dict[str, CaseAvailability]

    def pattern(self, case_id: str, channel_order: list[str] | None = None) -> str | None:
        """The availability pattern of a case as its present modalities joined by '+', in channel order."""
        case = self.cases.get(case_id)
        if case is None:
            return None
        order = channel_order or (list(self.channel_names.values()) if self.channel_names else [])
        rank = {name: i for i, name in enumerate(order)}
        present = sorted(case.present, key=lambda n: (rank.get(n, len(rank)), n))
        return "+".join(present) if present else "none"


def read_predictions_json(pred_dir: Path) -> PredictionsRecord | None:
    """The record in `pred_dir/predictions.json`, or None when the folder has none."""
    path = Path(pred_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    data = load_json(path, "fix or delete it")
    if not isinstance(data, dict) or not isinstance(data.get("cases", {}), dict):
        raise MSGLDMError(f"{path}: expected {{\"cases\": {{CASE: {{\"present\": [...], \"synthesized\": [...]}}}}}}; "
                          "fix or delete it")
    return PredictionsRecord(_channel_names(data.get("channel_names"), path),
                             {str(k): _case(v, path, k) for k, v in data.get("cases", {}).items()})


def _channel_names(raw: Any, path: Path) -> dict[int, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(str(k).isdigit() and isinstance(v, str) for k, v in raw.items()):
        raise MSGLDMError(f"{path}: 'channel_names' must map channel numbers to names like dataset.json; fix or delete "
                          "it")
    return {int(k): v for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}


def _case(raw: Any, path: Path, case_id: str) -> CaseAvailability:
    def names(key: str) -> list[str]:
        value = raw.get(key, []) if isinstance(raw, dict) else None
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise MSGLDMError(f"{path}: case '{case_id}' key '{key}' must be a list of modality names; fix or delete "
                              "it")
        return [str(v) for v in value]

    return CaseAvailability(names("present"), names("synthesized"))
