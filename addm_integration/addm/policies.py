"""Policy definitions (``data/query/<domain>/<policy_id>.json``): a policy's verdict labels and how it is asked.

The labels are the policy's own, lowest to highest, and everything that reads a verdict uses them: the strict
enum of the answer, normalization, accuracy and the ordinal AUPRC (index order). A policy without a definition
file keeps the Risk labels, upstream's own default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from addm_integration.addm.inputs import read_json
from addm_integration.addm.metrics import VERDICTS, canonical
from addm_integration.errors import BadInput


@dataclass(frozen=True)
class Policy:
    policy_id: str
    verdicts: tuple[str, ...] = VERDICTS
    system_prompt: str | None = None  # a file name in the definition's folder, replacing the project's prompt
    scoring: bool = False  # answers carry a scoring trace

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "verdicts": list(self.verdicts),
            "system_prompt": self.system_prompt,
            "scoring": self.scoring,
        }


def read_policy(path: Path, policy_id: str) -> Policy:
    """The definition at ``path``, or the default one when there is no file; a malformed file is bad input."""
    if not path.exists():
        return Policy(policy_id)
    data = read_json(path, "policy definition")
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return policy_from_json(data, path, policy_id)


def policy_from_json(data: Mapping[str, Any], where: Path | str, policy_id: str) -> Policy:
    if data.get("policy_id", policy_id) != policy_id:
        raise BadInput(f"{where}: policy_id is {data.get('policy_id')!r}, expected {policy_id!r}")
    verdicts = data.get("verdicts")
    if not isinstance(verdicts, list) or len(verdicts) < 2 or not all(isinstance(v, str) and v for v in verdicts):
        raise BadInput(f"{where}: field 'verdicts' must list at least two labels, lowest first")
    if len({canonical(v) for v in verdicts}) != len(verdicts):
        raise BadInput(f"{where}: field 'verdicts' names the same label twice")
    prompt = data.get("system_prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt or Path(prompt).name != prompt):
        raise BadInput(f"{where}: field 'system_prompt' must be a file name in the same folder, or null")
    scoring = data.get("scoring", False)
    if not isinstance(scoring, bool):
        raise BadInput(f"{where}: field 'scoring' must be true or false")
    return Policy(policy_id, tuple(verdicts), prompt, scoring)
