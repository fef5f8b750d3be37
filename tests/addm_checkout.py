"""A small ADDM checkout in upstream's own layout and formats, with content written here (none of upstream's).

Task prompts with their "L0: Primitives" section, policy YAML files of three label families (one extending
another, one scoring points), agendas with and without K, ground truth, the output-schema prompt, a dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
from gen_data import generate

RULE = "=" * 60
FAMILIES = {
    "G1_spill_V1": ["Low Risk", "High Risk", "Critical Risk"],
    "G2_dates_V1": ["Not Recommended", "Acceptable", "Recommended"],
    "G6_regulars_V1": ["Low Loyalty", "Moderate Loyalty", "High Loyalty"],
}
SCORING = "G2_dates_V3"  # extends G2_dates_V1 and adds a scoring section
EXTENDING = "G6_regulars_V2"  # says nothing of its decision: it inherits G6_regulars_V1's labels
SYSTEM_PROMPT = "Synthetic system prompt: answer with one JSON object holding a verdict.\n"


def _section(title: str, body: str) -> str:
    return f"{RULE}\n{title}\n{RULE}\n{body}\n"


SPILL_TASK = (
    _section("Agenda", "\nJudge how a restaurant handles drink spills.\n\nFor each record, denote the fields below.")
    + _section("Constants", "\nBASE = 1\n")
    + _section(
        "Policy Definitions (L0: Primitives)",
        "\nSPILL_SIZE\n- none: no spill described\n- small: a glass tipped over\n- large: a table flooded\n\n"
        "STAFF_REACTION\n- helped: staff cleaned up at once\n- ignored: nobody came\n",
    )
    + _section("L2: Aggregates", "\nN_SPILLS = count(is_spill_related = true)\n")
)
NAPKIN_TASK = _section("Agenda", "\nHelp assess napkin quality.\n") + _section(
    "L0: Primitives (per-review extraction)", "\nNAPKIN_KIND\n- paper: paper napkins\n- cloth: cloth napkins\n"
)
NO_L0_TASK = _section("Agenda", "\nA prompt that never defines its fields.\n")


SHARED_TERMS = """\
ACCOUNT_TYPE:
  name: Account type
  type: enum
  values:
    - id: firsthand
      label: Firsthand
      description: The reviewer was there
    - id: hearsay
      label: Hearsay
      description: Someone told the reviewer
  default: hearsay
"""
SPILL_TERMS = """\
SPILL_SIZE:
  values:
    - id: none
      description: No spill
    - id: flood
      description: The table was flooded
  default: none
"""
SPILL_V2_TERM = "spill:SPILL_SIZE"  # only V2 of the spill topic refers to it: the topic holds the union


def _policy_yaml(
    policy_id: str, labels: list[str] | None, extends: str | None = None, scoring: bool = False, term: str = ""
) -> str:
    lines = [f"# {policy_id}: synthetic", f'policy_id: "{policy_id}"']
    if extends:
        lines.append(f'extends: "{extends}"')
    lines += ["overview:", "  title: Synthetic", "normative:", "  terms:", '    - ref: "shared:ACCOUNT_TYPE"']
    if term:
        lines.append(f'    - ref: "{term}"')
    if scoring:
        lines += ["  scoring:", "    severity_points:", "      - label: Big", "        points: 5"]
    if labels:
        lines += ["  decision:", f"    verdicts: [{', '.join(repr(v) for v in labels)}]", "    ordered: true"]
    return "\n".join(lines) + "\n"


def business_ids(dataset: Path) -> list[str]:
    return [orjson.loads(line)["business_id"] for line in dataset.read_bytes().splitlines() if line.strip()]


def ground_truth(policy_id: str, verdicts: dict[str, str | None]) -> bytes:
    restaurants = {b: {"name": b, "ground_truth": {"verdict": v, "policy_id": policy_id}} for b, v in verdicts.items()}
    return orjson.dumps({"policy_id": policy_id, "domain": "yelp", "k": 25, "restaurants": restaurants})


def build(checkout: Path, n_restaurants: int = 6) -> Path:
    """Write the checkout; returns its dataset file."""
    scratch = checkout.parent / f"{checkout.name}-gen"
    generate(scratch, n_restaurants=n_restaurants, seed=23)
    dataset = checkout / "data" / "context" / "yelp" / "dataset_K25.jsonl"
    dataset.parent.mkdir(parents=True)
    shutil.copyfile(scratch / "data" / "context" / "yelp" / "dataset_K25.jsonl", dataset)
    shutil.rmtree(scratch)
    files = {
        "data/tasks/yelp/T1a_prompt.txt": SPILL_TASK,
        "data/query/yelp/past_prompt/T1b_prompt.txt": NAPKIN_TASK,
        "data/tasks/yelp/T1c_prompt.txt": NO_L0_TASK,
        "src/addm/query/prompts/output_schema.txt": SYSTEM_PROMPT,
        "data/query/yelp/G1_spill_V1_K25_prompt.txt": "Agenda of spills at K25.\n",
        "data/query/yelp/G2_dates_V1_prompt.txt": "Agenda of dates, for every K.\n",
        "data/query/yelp/G2_dates_V3_K25_prompt.txt": "Agenda of dates with points.\n",
        "data/query/yelp/G6_regulars_V1_K25_prompt.txt": "Agenda of regulars.\n",
        "data/query/yelp/G9_unknown_V1_K25_prompt.txt": "An agenda of no policy.\n",
    }
    for group_topic, labels in FAMILIES.items():
        group, topic, version = group_topic.split("_")
        files[f"src/addm/query/policies/{group}/{topic}/{version}.yaml"] = _policy_yaml(group_topic, labels)
    files["src/addm/query/policies/G2/dates/V3.yaml"] = _policy_yaml(SCORING, None, "G2_dates_V1", scoring=True)
    files["src/addm/query/policies/G6/regulars/V2.yaml"] = _policy_yaml(EXTENDING, None, "G6_regulars_V1")
    files["src/addm/query/policies/G9/broken/V1.yaml"] = "policy_id: [unclosed\n"
    files["src/addm/query/policies/G1/spill/V2.yaml"] = _policy_yaml(
        "G1_spill_V2", None, "G1_spill_V1", term=SPILL_V2_TERM
    )
    files["src/addm/query/libraries/terms/_shared.yaml"] = SHARED_TERMS
    files["src/addm/query/libraries/terms/spill.yaml"] = SPILL_TERMS
    for rel, text in files.items():
        path = checkout / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ids = business_ids(dataset)
    for policy_id, labels in {**FAMILIES, SCORING: FAMILIES["G2_dates_V1"]}.items():
        verdicts = {b: labels[i % len(labels)] for i, b in enumerate(ids)}
        gt = checkout / "data" / "answers" / "yelp" / f"{policy_id}_K25_groundtruth.json"
        gt.parent.mkdir(parents=True, exist_ok=True)
        gt.write_bytes(ground_truth(policy_id, verdicts))
    return dataset
