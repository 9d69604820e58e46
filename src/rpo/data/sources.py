"""Read (prompt, response, reward) triplets from the hub, local files or the synthetic world, and check every row.

Two layouts, parsed by the same code whether the records come from `datasets.load_dataset` or a
local JSONL/Parquet file:
  triplets       one record per completion: `instruction` (or `prompt`), `response`, `reward`
                 (the authors' split bilalfaye/ultrafeedback-rpo-split)
  ultrafeedback  one record per prompt: `instruction` and `completions`, a list of records each with
                 `response` and the scores `overall_score` / `fine-grained_score` (openbmb/UltraFeedback)
"""
from __future__ import annotations

import json
import math
import numbers
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rpo.data import synthetic
from rpo.errors import DataError
from rpo.io import md5

PROMPT_KEYS = ("instruction", "prompt")
MAX_DEPTH = 32  # a record nested deeper is not a data row (and would exhaust Python's recursion limit elsewhere)


def _no_duplicate_keys(pairs):
    """json.loads keeps the last of a key given twice (`"reward": 1, "reward": 9`): refuse it instead."""
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise DuplicateKey(twice)
    return dict(pairs)


class DuplicateKey(ValueError):
    pass


def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_line(line: str):
    """One JSONL line as a value, or an `Invalid` saying why not: bad JSON, a key given twice, nesting deeper
    than MAX_DEPTH, a number with more digits than Python converts."""
    try:
        value = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    except DuplicateKey as exc:
        return Invalid(f"key '{exc.args[0]}' given twice in one object (JSON keeps the last silently)")
    except json.JSONDecodeError as exc:
        return Invalid(f"not valid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return Invalid(f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return Invalid(f"not valid JSON: {exc}")
    if _depth(value) > MAX_DEPTH:
        return Invalid(f"nested deeper than {MAX_DEPTH} levels")
    return value


# Characters that print as nothing: zero-width spaces and joiners, the word joiner, a byte-order mark, soft hyphens
# (Unicode category Cf). Text made only of these and whitespace is empty.
def visible(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip()


def identity(prompt: str) -> str:
    """What makes two prompts the same prompt: Unicode NFC (an accent composed or not) and whitespace collapsed
    (a trailing newline, doubled spaces). The held-out split and the leakage check compare prompts by this."""
    return " ".join(unicodedata.normalize("NFC", prompt).split())


def _is_present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass
class Rows:
    """Checked rows and the rejected ones, each rejection with where it came from and why."""

    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    inputs: int = 0  # rows read: each completion, and each record rejected whole

    def reject(self, where: dict, fieldname: str, reason: str, record: dict | None = None) -> None:
        entry = {**where, "field": fieldname, "reason": reason}
        if record:
            entry.update({k: str(record.get(k, ""))[:200] for k in ("prompt", "response")})
        self.rejected.append(entry)


def describe(where: dict) -> str:
    """'file: line 3, completion 1' (JSONL lines count from 1) or 'name:split: row 0' (records count from 0)."""
    place = f"line {where['line']}" if "line" in where else f"row {where['row']}"
    return f"{where['file']}: {place}" + (f", completion {where['completion']}" if "completion" in where else "")


def order(where: dict) -> tuple:
    return where.get("line", where.get("row", 0)), where.get("completion", -1)


def read_records(data_cfg: dict):
    """(records, origin, input_md5s): records are (location, value) pairs in file order; a line that is not JSON
    becomes an `Invalid` value, rejected later like any other bad row."""
    source, path = data_cfg["source"], data_cfg["path"]
    if source == "synthetic":
        syn = data_cfg["synthetic"]
        rows = synthetic.dataset(syn["n_prompts"], syn["responses_per_prompt"], syn["seed"])
        return [({"file": "synthetic", "row": i}, r) for i, r in enumerate(rows)], f"synthetic({syn})", {}
    if source == "hub":
        return _read_hub(path, data_cfg["hub_split"])
    file = Path(path)
    if not file.exists():
        raise DataError(f"{path}: data file not found (config key 'data.path')")
    if not file.is_file():
        raise DataError(f"{path}: not a file (config key 'data.path' names a folder or device)")
    return _read_file(file, source), str(file), {str(file): md5(file)}


def _read_hub(name: str, split: str):
    try:  # only for hub data: importing it costs ~1 s on 2 cores
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("data.source 'hub' needs the `datasets` package: pip install datasets") from exc
    dataset = datasets.load_dataset(name, split=split)
    return [({"file": f"{name}:{split}", "row": i}, r) for i, r in enumerate(dataset)], f"{name}:{split}", {
        f"{name}:{split}": getattr(dataset, "_fingerprint", "unknown")}


@dataclass
class Invalid:
    reason: str


PARQUET_MAGIC = b"PAR1"


def _read_file(path: Path, source: str) -> list:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if source == "parquet":
        if head != PARQUET_MAGIC:
            raise DataError(f"{path}: not a Parquet file (config key 'data.source' is 'parquet'; JSON lines: 'jsonl')")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise DataError(f"{path}: unreadable Parquet file ({type(exc).__name__}: {exc})") from None
        return [({"file": str(path), "row": i}, r) for i, r in enumerate(frame.to_dict("records"))]
    if head == PARQUET_MAGIC:
        raise DataError(f"{path}: a Parquet file, read as JSON lines (config key 'data.source': set it to 'parquet')")
    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = {"file": str(path), "line": number}
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM may open the file
            except UnicodeDecodeError as exc:
                records.append((where, Invalid(f"not UTF-8 text (byte {exc.start + 1} of the line)")))
                continue
            if not line.strip():
                continue
            records.append((where, parse_line(line)))
    return records


def _is_number(value) -> bool:
    """Only real numbers are rewards: not booleans, not strings ("7", "1_000"), not bytes."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _type_name(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bytes: "bytes", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, numbers.Number) else type(value).__name__)


def completions(records, layout: str, reward_field: str, rows: Rows) -> list[tuple[dict, dict]]:
    """Flatten either layout into (location, {prompt, response, reward}) candidates; malformed records are rejected.
    Each candidate, and each record rejected whole, is one input row (`rows.inputs`)."""
    out = []
    for where, record in records:
        whole_rejects = len(rows.rejected)
        _flatten(where, record, layout, reward_field, rows, out)
        rows.inputs += len(rows.rejected) - whole_rejects
    rows.inputs += len(out)
    return out


def _flatten(where, record, layout, reward_field, rows, out) -> None:
    if isinstance(record, Invalid):
        return rows.reject(where, "*", record.reason)
    if not isinstance(record, dict):
        return rows.reject(where, "*", f"not a JSON object (got {_type_name(record)})")
    # One rule for JSONL and Parquet (where a file with both columns has nulls in the one a row does not use): the
    # prompt is `instruction`, else `prompt`; null or NaN counts as absent; both present with different texts is a
    # reject, never a silent choice.
    present = [k for k in PROMPT_KEYS if _is_present(record.get(k))]
    if not present:
        return rows.reject(where, "instruction", "missing field 'instruction' (or 'prompt')")
    if len(present) == 2 and record["instruction"] != record["prompt"]:
        return rows.reject(where, "prompt", "both 'instruction' and 'prompt' given, with different texts", record)
    prompt = record[present[0]]
    if layout == "triplets":
        missing = [k for k in ("response", "reward") if k not in record]
        out.append((where, {"prompt": prompt, "response": record.get("response"), "reward": record.get("reward"),
                            "_missing": missing}))
        return None
    items = record.get("completions")
    if items is None:
        return rows.reject(where, "completions", "missing field 'completions' (a list)", {"prompt": prompt})
    if isinstance(items, np.ndarray):  # a Parquet list column
        items = list(items)
    if not isinstance(items, list):
        return rows.reject(where, "completions", f"must be a list, got {_type_name(items)}", {"prompt": prompt})
    if not items:
        return rows.reject(where, "completions", "empty list: the prompt has no completions", {"prompt": prompt})
    for j, item in enumerate(items):
        at = {**where, "completion": j}
        if not isinstance(item, dict):
            rows.reject(at, "*", f"a completion must be an object, got {_type_name(item)}", {"prompt": prompt})
            continue
        out.append((at, {"prompt": prompt, "response": item.get("response"), "reward": item.get(reward_field),
                         "_missing": [k for k in ("response", reward_field) if k not in item]}))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check(candidates, data_cfg: dict, rows: Rows) -> None:
    """Keep the rows that pass every check; reject the rest with a reason. Order of checks: fields,
    reward, empty text, length, exact duplicates, then prompts left with too few responses."""
    max_chars, seen = data_cfg["max_chars"], {}
    low, high = data_cfg["reward_range"]
    for where, cand in candidates:
        if cand["_missing"]:
            rows.reject(where, cand["_missing"][0], f"missing field '{cand['_missing'][0]}'", cand)
            continue
        if not _is_number(cand["reward"]):
            rows.reject(where, "reward", f"not a number: {_type_name(cand['reward'])} ({cand['reward']!r:.60})", cand)
            continue
        try:
            reward = float(cand["reward"])
        except OverflowError:
            rows.reject(where, "reward", f"a number too large for a float ({str(cand['reward'])[:20]}...)", cand)
            continue
        if not low <= reward <= high:  # NaN fails both comparisons
            rows.reject(where, "reward", f"{reward!r} outside [{low}, {high}] (data.reward_range)", cand)
            continue
        bad_text = next((k for k in ("prompt", "response") if not isinstance(cand[k], str) or not visible(cand[k])), None)
        if bad_text:
            rows.reject(where, bad_text, "empty or not text (zero-width characters and whitespace only count as empty)",
                        cand)
            continue
        unencodable = next((k for k in ("prompt", "response") if not _encodable(cand[k])), None)
        if unencodable:
            rows.reject(where, unencodable, "invalid Unicode (a lone surrogate: an emoji cut in half?)", cand)
            continue
        too_long = next((k for k in ("prompt", "response") if len(cand[k]) > max_chars), None)
        if too_long:
            rows.reject(where, too_long, f"longer than {max_chars} characters (data.max_chars)", cand)
            continue
        key = (cand["prompt"], cand["response"], reward)
        if key in seen:
            rows.reject(where, "*", f"exact duplicate of {describe(seen[key])}", cand)
            continue
        seen[key] = where
        rows.kept.append({"where": where, "prompt": cand["prompt"], "response": cand["response"], "reward_raw": reward})

    counts = {}
    for row in rows.kept:
        counts[row["prompt"]] = counts.get(row["prompt"], 0) + 1
    minimum = data_cfg["min_responses_per_prompt"]
    few = {p for p, n in counts.items() if n < minimum}
    if few:
        for row in rows.kept:
            if row["prompt"] in few:
                rows.reject(row["where"], "prompt", f"prompt has {counts[row['prompt']]} response(s), fewer than "
                                                    f"{minimum} (data.min_responses_per_prompt)", row)
        rows.kept = [row for row in rows.kept if row["prompt"] not in few]


def load_rows(data_cfg: dict) -> tuple[Rows, str, dict]:
    records, origin, input_md5 = read_records(data_cfg)
    rows = Rows()
    check(completions(records, data_cfg["layout"], data_cfg["reward_field"], rows), data_cfg, rows)
    return rows, origin, input_md5
