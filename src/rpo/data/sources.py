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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rpo.data import synthetic
from rpo.errors import DataError
from rpo.io import md5

PROMPT_KEYS = ("instruction", "prompt")


@dataclass
class Rows:
    """Checked rows and the rejected ones, each rejection with where it came from and why."""

    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def reject(self, where: dict, fieldname: str, reason: str, record: dict | None = None) -> None:
        entry = {**where, "field": fieldname, "reason": reason}
        if record:
            entry.update({k: str(record.get(k, ""))[:200] for k in ("prompt", "response")})
        self.rejected.append(entry)


def read_records(data_cfg: dict):
    """(records, origin, input_md5s): records are (location, dict) pairs in file order."""
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
    return _read_file(file, source), str(file), {str(file): md5(file)}


def _read_hub(name: str, split: str):
    try:  # only for hub data: importing it costs ~1 s on 2 cores
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("data.source 'hub' needs the `datasets` package: pip install datasets") from exc
    dataset = datasets.load_dataset(name, split=split)
    return [({"file": f"{name}:{split}", "row": i}, r) for i, r in enumerate(dataset)], f"{name}:{split}", {
        f"{name}:{split}": getattr(dataset, "_fingerprint", "unknown")}


def _read_file(path: Path, source: str) -> list:
    if source == "parquet":
        return [({"file": str(path), "row": i}, r) for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
    records = []
    with open(path, encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                records.append(({"file": str(path), "row": i}, json.loads(line)))
            except json.JSONDecodeError as exc:
                records.append(({"file": str(path), "row": i}, {"__invalid__": f"not valid JSON: {exc.msg}"}))
    return records


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def completions(records, layout: str, reward_field: str, rows: Rows) -> list[tuple[dict, dict]]:
    """Flatten either layout into (location, {prompt, response, reward}) candidates; malformed records are rejected."""
    out = []
    for where, record in records:
        if "__invalid__" in record:
            rows.reject(where, "*", record["__invalid__"])
            continue
        prompt_key = next((k for k in PROMPT_KEYS if k in record), None)
        if prompt_key is None:
            rows.reject(where, "instruction", "missing field 'instruction' (or 'prompt')")
            continue
        prompt = record[prompt_key]
        if layout == "triplets":
            out.append((where, {"prompt": prompt, "response": record.get("response"), "reward": record.get("reward"),
                                "_missing": [k for k in ("response", "reward") if k not in record]}))
            continue
        items = record.get("completions")
        if items is None or not hasattr(items, "__len__"):
            rows.reject(where, "completions", "missing field 'completions' (a list)", {"prompt": prompt})
            continue
        for j, item in enumerate(items):
            item = dict(item) if item is not None else {}
            out.append(({**where, "completion": j}, {"prompt": prompt, "response": item.get("response"),
                                                   "reward": item.get(reward_field),
                                                   "_missing": [k for k in ("response", reward_field) if k not in item]}))
    return out


def check(candidates, data_cfg: dict, rows: Rows) -> None:
    """Keep the rows that pass every check; reject the rest with a reason. Order of checks: fields,
    reward, empty text, length, exact duplicates, then prompts left with too few responses."""
    max_chars, seen = data_cfg["max_chars"], {}
    for where, cand in candidates:
        if cand["_missing"]:
            rows.reject(where, cand["_missing"][0], f"missing field '{cand['_missing'][0]}'", cand)
            continue
        reward = _finite(cand["reward"])
        if reward is None:
            rows.reject(where, "reward", f"not a finite number ({cand['reward']!r})", cand)
            continue
        bad_text = next((k for k in ("prompt", "response") if not isinstance(cand[k], str) or not cand[k].strip()), None)
        if bad_text:
            rows.reject(where, bad_text, "empty or not text", cand)
            continue
        too_long = next((k for k in ("prompt", "response") if len(cand[k]) > max_chars), None)
        if too_long:
            rows.reject(where, too_long, f"longer than {max_chars} characters (data.max_chars)", cand)
            continue
        key = (cand["prompt"], cand["response"], reward)
        if key in seen:
            rows.reject(where, "*", f"exact duplicate of row {seen[key]['row']}", cand)
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
