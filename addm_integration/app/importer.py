"""``addm-import``: an ADDM checkout's own files, as upstream lays them out, turned into a workspace.

Upstream keeps a task as a prompt whose "L0: Primitives" section lists the fields, a policy as a YAML file whose
``normative.decision.verdicts`` are its labels, agendas per K (or one for every K), ground truth, and the system
prompt of run_baseline in ``src/addm/query/prompts/output_schema.txt``. This writes them where the pipelines read
them, as a plan first: nothing is written before every source has been read, a file that already holds the same
bytes is left alone (a second import changes nothing), and one that differs is kept unless ``--force``.

The readers (``parse_task_prompt``, ``read_policies``, ``policy_definition``) take text and mappings, not
paths into a workspace, so another writer (topic definitions from the same policies) can reuse them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from addm_integration.addm.inputs import RELEVANCE_FIELD, read_ground_truth
from addm_integration.addm.metrics import VERDICTS
from addm_integration.errors import BadInput
from addm_integration.store.workspace import Workspace, atomic_write, place

KS = (25, 50, 100, 200)
SYSTEM_PROMPT_NAME = "output_schema.txt"  # the name it keeps in the workspace, beside the policy definitions
_RULE = re.compile(r"^=+\s*$")
_FIELD = re.compile(r"^([A-Z][A-Z0-9_]*)\s*$")
_VALUE = re.compile(r"^\s*-\s*([^:\s][^:]*?)\s*:\s*(.*?)\s*$")
_RELEVANCE = re.compile(r"\bis_[a-z0-9]+(?:_[a-z0-9]+)*_related\b")
_TASK_PROMPT = re.compile(r"^(?P<id>.+)_prompt\.txt$")
_AGENDA = re.compile(r"^(?P<id>.+?)(?:_K(?P<k>\d+))?_prompt\.txt$")
_GROUND_TRUTH = re.compile(r"^(?P<id>.+)_K(?P<k>\d+)_groundtruth\.json$")


# --- reading upstream's formats ---------------------------------------------------------------------------------


def sections(text: str) -> dict[str, list[str]]:
    """The prompt's sections by title: a title is a line between two lines of ``=``."""
    lines = text.splitlines()
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    i = 0
    while i < len(lines):
        if i + 2 < len(lines) and _RULE.match(lines[i]) and _RULE.match(lines[i + 2]) and lines[i + 1].strip():
            current = out.setdefault(lines[i + 1].strip(), [])
            i += 3
            continue
        if current is not None:
            current.append(lines[i])
        i += 1
    return out


def parse_task_prompt(task_id: str, text: str) -> dict[str, Any]:
    """A task definition from a task prompt; raises ValueError saying what the prompt lacks."""
    found = sections(text)
    l0 = next((body for title, body in found.items() if "L0: Primitives" in title), None)
    if l0 is None:
        raise ValueError('no "L0: Primitives" section')
    fields: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in l0:
        if header := _FIELD.match(line):
            current = fields.setdefault(header.group(1).lower(), {})
        elif current is not None and (value := _VALUE.match(line)):
            current[value.group(1)] = value.group(2)
    fields = {name: values for name, values in fields.items() if values}
    if not fields:
        raise ValueError('its "L0: Primitives" section defines no field with values')
    agenda = next((body for title, body in found.items() if title.lower().startswith("agenda")), None)
    paragraph = _first_paragraph(agenda or [])
    if not paragraph:
        raise ValueError('no "Agenda" section saying what to look for')
    relevance = _RELEVANCE.search(text)
    definition: dict[str, Any] = {"task_id": task_id, "description": paragraph, "fields": fields}
    definition["relevance_field"] = relevance.group(0) if relevance else RELEVANCE_FIELD
    return definition


def _first_paragraph(lines: Sequence[str]) -> str:
    words: list[str] = []
    for line in lines:
        if line.strip():
            words.append(line.strip())
        elif words:
            break
    return " ".join(words)


def _yaml_mapping(path: Path, bad: list[tuple[Path, str]]) -> dict[str, Any] | None:
    """The YAML mapping a file holds, or None with the reason added to ``bad`` (the import goes on without it)."""
    import yaml  # only the importer needs it

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        bad.append((path, f"not valid YAML ({str(exc).splitlines()[0]})"))
        return None
    if not isinstance(doc, dict):
        bad.append((path, "not a YAML mapping"))
        return None
    return doc


def read_policies(checkout: Path) -> tuple[dict[str, tuple[Path, dict[str, Any]]], list[tuple[Path, str]]]:
    """policy_id -> (file, document with ``extends`` resolved) of every policy YAML, and the files not usable."""

    raw: dict[str, tuple[Path, dict[str, Any]]] = {}
    bad: list[tuple[Path, str]] = []
    for path in sorted((checkout / "src" / "addm" / "query" / "policies").glob("*/*/*.yaml")):
        group, topic, version = path.parent.parent.name, path.parent.name, path.stem
        doc = _yaml_mapping(path, bad)
        if doc is None:
            continue
        policy_id = str(doc.get("policy_id") or f"{group}_{topic}_{version}").replace("/", "_")
        raw[policy_id] = (path, doc)
    return {pid: (path, resolve_extends(pid, raw)) for pid, (path, _) in raw.items()}, bad


def resolve_extends(policy_id: str, raw: Mapping[str, tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """The policy with what it does not say itself taken from the policy it ``extends`` (section by section)."""
    chain: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    current: str | None = policy_id
    while current is not None and current in raw and current not in seen:
        seen.add(current)
        doc = raw[current][1]
        chain.append(doc)
        parent = doc.get("extends")
        current = str(parent).replace("/", "_") if parent else None
    merged: dict[str, Any] = {}
    for doc in reversed(chain):
        normative = {**merged.get("normative", {}), **(doc.get("normative") or {})}
        merged = {**merged, **doc, "normative": normative}
    return merged


def policy_definition(policy_id: str, doc: Mapping[str, Any], system_prompt: str | None) -> dict[str, Any]:
    """The workspace's policy definition of a resolved policy document; raises ValueError without labels."""
    normative = doc.get("normative") or {}
    decision = normative.get("decision") if isinstance(normative, dict) else None
    verdicts = decision.get("verdicts") if isinstance(decision, dict) else None
    if not isinstance(verdicts, list) or len(verdicts) < 2 or not all(isinstance(v, str) for v in verdicts):
        raise ValueError("no normative.decision.verdicts list of labels")
    return {
        "policy_id": policy_id,
        "verdicts": verdicts,
        "system_prompt": system_prompt,
        "scoring": bool(normative.get("scoring")),
    }


# --- the plan -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    target: Path
    data: bytes | None = None  # what to write, or
    source: Path | None = None  # a file to link (or copy) as it is


@dataclass
class Plan:
    files: dict[Path, Planned]
    skipped: list[tuple[Path, str]]
    notes: list[str]

    def add(self, item: Planned) -> None:
        self.files.setdefault(item.target, item)


def plan(checkout: Path, ws: Workspace, domain: str) -> Plan:
    out = Plan({}, [], [])
    _plan_datasets(checkout, ws, domain, out)
    _plan_tasks(checkout, ws, domain, out)
    labels = _plan_policies(checkout, ws, domain, out)
    _plan_topics(checkout, ws, domain, out)
    _plan_agendas(checkout, ws, domain, out, labels)
    _plan_ground_truth(checkout, ws, domain, out, labels)
    return out


def _plan_datasets(checkout: Path, ws: Workspace, domain: str, out: Plan) -> None:
    for k in KS:
        source = checkout / "data" / "context" / domain / f"dataset_K{k}.jsonl"
        if source.is_file():
            out.add(Planned(ws.dataset(domain, k), source=source))


def _task_prompts(checkout: Path, domain: str) -> Iterator[tuple[Path, bool]]:
    """Every file that may be a task prompt, and whether it must be one (data/query also holds agendas)."""
    yield from ((p, True) for p in sorted((checkout / "data" / "tasks" / domain).glob("*_prompt.txt")))
    yield from ((p, True) for p in sorted((checkout / "data" / "query" / domain / "past_prompt").glob("*_prompt.txt")))
    yield from ((p, False) for p in sorted((checkout / "data" / "query" / domain).glob("*_prompt.txt")))


def _plan_tasks(checkout: Path, ws: Workspace, domain: str, out: Plan) -> None:
    for path, must in _task_prompts(checkout, domain):
        text = _read(path, out) if must else _text_or_none(path)
        if text is None or "L0: Primitives" not in text:
            if text is not None and must:
                out.skipped.append((path, 'no "L0: Primitives" section'))
            continue
        task_id = _TASK_PROMPT.match(path.name).group("id")  # type: ignore[union-attr]
        target = ws.task(domain, task_id)
        if target in out.files:
            out.skipped.append((path, f"task {task_id} already read from another prompt"))
            continue
        try:
            definition = parse_task_prompt(task_id, text)
        except ValueError as exc:
            out.skipped.append((path, str(exc)))
            continue
        out.add(Planned(target, _json(definition)))


def _plan_policies(checkout: Path, ws: Workspace, domain: str, out: Plan) -> dict[str, tuple[str, ...]]:
    prompt = checkout / "src" / "addm" / "query" / "prompts" / "output_schema.txt"
    prompt_text = _read(prompt, out) if prompt.is_file() else None
    if prompt_text is not None:
        out.add(Planned(ws.policy(domain, "_").with_name(SYSTEM_PROMPT_NAME), prompt_text.encode()))
    policies, bad = read_policies(checkout)
    out.skipped.extend(bad)
    labels: dict[str, tuple[str, ...]] = {}
    for policy_id, (path, doc) in policies.items():
        try:
            definition = policy_definition(policy_id, doc, SYSTEM_PROMPT_NAME if prompt_text is not None else None)
        except ValueError as exc:
            out.skipped.append((path, str(exc)))
            continue
        labels[policy_id] = tuple(definition["verdicts"])
        out.add(Planned(ws.policy(domain, policy_id), _json(definition)))
    return labels


def read_terms(checkout: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[Path, str]]]:
    """``<library>:<TERM>`` -> term of upstream's term files (``_shared.yaml`` is the ``shared`` library)."""

    terms: dict[str, dict[str, Any]] = {}
    bad: list[tuple[Path, str]] = []
    for path in sorted((checkout / "src" / "addm" / "query" / "libraries" / "terms").glob("*.yaml")):
        library = "shared" if path.stem == "_shared" else path.stem
        doc = _yaml_mapping(path, bad)
        if doc is None:
            continue
        terms.update({f"{library}:{term}": body for term, body in doc.items() if isinstance(body, dict)})
    return terms, bad


def term_field(term: Mapping[str, Any]) -> dict[str, str]:
    """A term's values as a task field, value -> meaning, its default first; raises ValueError without values."""
    values = term.get("values")
    if not isinstance(values, list) or not values:
        raise ValueError("no values")
    field = {str(v["id"]): str(v.get("description") or v.get("label") or v["id"]) for v in values if "id" in v}
    default = str(term.get("default", ""))
    if default in field:
        field = {default: field[default], **field}
    return field


def topic_definition(topic: str, docs: Sequence[Mapping[str, Any]], terms: Mapping[str, Any]) -> dict[str, Any]:
    """The topic's task definition: the union of the fields its policies refer to, in the order they appear."""
    fields: dict[str, dict[str, str]] = {}
    for doc in docs:
        normative = doc.get("normative") or {}
        for entry in normative.get("terms") or [] if isinstance(normative, dict) else []:
            ref = str(entry.get("ref", "")) if isinstance(entry, dict) else str(entry)
            if ref not in terms:
                raise ValueError(f"term {ref!r} is in no term file")
            name = ref.rpartition(":")[2].lower()
            if name not in fields:
                try:
                    fields[name] = term_field(terms[ref])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"term {ref!r} has no list of values with ids") from None
    if not fields:
        raise ValueError("its policies refer to no terms")
    overview = docs[0].get("overview") if isinstance(docs[0].get("overview"), dict) else {}
    text = overview.get("description") or overview.get("title") or topic  # type: ignore[union-attr]
    return {"task_id": topic, "description": str(text).strip(), "fields": fields, "policies": []}


def _plan_topics(checkout: Path, ws: Workspace, domain: str, out: Plan) -> None:
    """One topic definition per ``<group>/<topic>`` folder of policies, when the checkout has term files."""
    terms, bad = read_terms(checkout)
    out.skipped.extend(bad)
    if not terms:
        return
    policies, _ = read_policies(checkout)  # its unusable files are reported once, with the policies
    by_topic: dict[str, list[tuple[str, Path, Mapping[str, Any]]]] = {}
    for policy_id, (path, doc) in policies.items():
        by_topic.setdefault(f"{path.parent.parent.name}_{path.parent.name}", []).append((policy_id, path, doc))
    for topic, members in sorted(by_topic.items()):
        members.sort(key=lambda m: m[1].name)
        try:
            definition = topic_definition(topic, [doc for _, _, doc in members], terms)
        except ValueError as exc:
            out.skipped.append((members[0][1].parent, f"topic {topic}: {exc}"))
            continue
        definition["policies"] = [policy_id for policy_id, _, _ in members]
        out.add(Planned(ws.task(domain, topic), _json(definition)))


def _plan_agendas(checkout: Path, ws: Workspace, domain: str, out: Plan, labels: Mapping[str, Any]) -> None:
    folder = checkout / "data" / "query" / domain
    general: list[tuple[str, Path]] = []
    for path in sorted(folder.glob("*_prompt.txt")):
        match = _AGENDA.match(path.name)
        assert match is not None
        policy_id, k = match.group("id"), match.group("k")
        if policy_id not in labels:
            if "L0: Primitives" not in (_text_or_none(path) or ""):  # a task prompt here was read as a task
                out.skipped.append((path, f"an agenda of no policy: there is no YAML file of {policy_id}"))
            continue
        if k is None:
            general.append((policy_id, path))
        elif int(k) in KS:
            out.add(Planned(ws.agenda(domain, policy_id, int(k)), source=path))
        else:
            out.skipped.append((path, f"K{k} is not one of {', '.join(map(str, KS))}"))
    for policy_id, path in general:  # an older agenda without K serves every K that has none of its own
        for k in KS:
            out.add(Planned(ws.agenda(domain, policy_id, k), source=path))


def _text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _plan_ground_truth(checkout: Path, ws: Workspace, domain: str, out: Plan, labels: Mapping[str, Any]) -> None:
    for folder in (checkout / "data" / "answers" / domain, checkout / "data" / "tasks" / domain):
        for path in sorted(folder.glob("*_groundtruth.json")):
            match = _GROUND_TRUTH.match(path.name)
            if match is None:
                out.skipped.append((path, "no _K<k> in its name: which dataset it scores is unknown"))
                continue
            policy_id, k = match.group("id"), int(match.group("k"))
            target = ws.ground_truth(domain, policy_id, k)
            if target in out.files:
                continue  # data/answers (upstream's current place) wins over the older data/tasks
            try:
                read_ground_truth(path, labels.get(policy_id, VERDICTS))
            except BadInput as exc:
                out.notes.append(f"warning: {exc}\n  (addm-baseline refuses this ground truth until it is fixed)")
            out.add(Planned(target, source=path))


def _read(path: Path, out: Plan) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        out.skipped.append((path, f"not readable as UTF-8 text ({exc.__class__.__name__})"))
        return None


def _json(obj: object) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


# --- carrying it out ---------------------------------------------------------------------------------------------


def _same(item: Planned) -> bool:
    target = item.target
    if not target.is_file():
        return False
    if item.source is not None:
        if os.path.samefile(item.source, target):
            return True
        if item.source.stat().st_size != target.stat().st_size:
            return False
        with item.source.open("rb") as a, target.open("rb") as b:
            while chunk := a.read(1 << 20):
                if chunk != b.read(len(chunk)):
                    return False
        return True
    return target.read_bytes() == item.data


def _write(item: Planned) -> None:
    if item.data is not None:
        atomic_write(item.target, item.data)
        return
    assert item.source is not None
    place(item.source, item.target)  # the checkout's own file: no second copy of a dataset


def run_import(checkout: Path, root: Path, domain: str, force: bool) -> list[str]:
    """Import and return the lines to print; BadInput when ``checkout`` is not an ADDM checkout."""
    if not checkout.is_dir():
        raise BadInput(f"{checkout}: not a directory")
    if not (checkout / "data").is_dir() and not (checkout / "src" / "addm").is_dir():
        raise BadInput(f"{checkout}: not an ADDM checkout (neither data/ nor src/addm/ is there)")
    ws = Workspace(root)
    planned = plan(checkout, ws, domain)
    if not planned.files:
        raise BadInput(f"{checkout}: nothing to import for domain {domain!r}")
    lines: list[str] = []
    written = unchanged = kept = 0
    for target in sorted(planned.files):
        item = planned.files[target]
        rel = target.relative_to(root)
        if _same(item):
            unchanged += 1
            continue
        if target.exists() and not force:
            kept += 1
            lines.append(f"kept {rel}\n  it differs from the checkout's (--force replaces it)")
            continue
        _write(item)
        written += 1
        lines.append(f"wrote {rel}")
    for path, reason in planned.skipped:
        lines.append(f"skipped {_shown(path, checkout)}\n  {reason}")
    lines.extend(planned.notes)
    lines.append(f"{written} written, {unchanged} already up to date, {kept} kept, {len(planned.skipped)} skipped")
    lines.append(f"workspace: {root}")
    return lines


def _shown(path: Path, checkout: Path) -> str:
    try:
        return str(path.relative_to(checkout))
    except ValueError:
        return str(path)
