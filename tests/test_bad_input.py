"""A corpus of bad input files with the defects real files have, built here: each case through `rpo prepare-data` in
`error` mode (exit 2, one message naming file, line and field, no traceback, the rejects file kept) and in `drop`
mode (the good rows kept, the bad one a reject, and the manifest's accounting adding up)."""

import json

import pandas as pd
import pytest
from test_data import ultrafeedback_rows

from rpo.cli import main

GOOD = ultrafeedback_rows()  # 12 prompts x 4 completions


def _record(completions, prompt="A prompt of its own."):
    return json.dumps({"instruction": prompt, "completions": completions}).encode()


def _completion(reward):
    return {"response": "some answer", "overall_score": reward}


# (name, the bad line's bytes, field, words in the reason, how many input rows the line is)
CASES = [
    ("non-utf8", b'{"instruction": "caf\xe9", "completions": []}', "*", "not UTF-8", 1),
    ("a number", b"7", "*", "not a JSON object", 1),
    ("a string", b'"just text"', "*", "not a JSON object", 1),
    ("null", b"null", "*", "not a JSON object", 1),
    ("a list", b"[1, 2]", "*", "not a JSON object", 1),
    ("truncated", b'{"instruction": "cut', "*", "not valid JSON", 1),
    ("completions a string", _record("one answer"), "completions", "must be a list", 1),
    ("completions an object", _record({"response": "x"}), "completions", "must be a list", 1),
    ("completions empty", _record([]), "completions", "empty list", 1),
    ("completion not an object", _record([_completion(3), "x", _completion(2)]), "*", "must be an object", 3),
    ("reward true", _record([_completion(True), _completion(2)]), "reward", "not a number", 2),
    ("reward a string", _record([_completion("7"), _completion(2)]), "reward", "not a number", 2),
    ("reward 1_000", _record([_completion("1_000"), _completion(2)]), "reward", "not a number", 2),
    ("reward huge", _record([_completion(1e300), _completion(2)]), "reward", "outside", 2),
    ("reward below the range", _record([_completion(-1e7), _completion(2)]), "reward", "outside", 2),
    (
        "reward NaN",
        b'{"instruction": "p", "completions": [{"response": "a", "overall_score": NaN}]}',
        "reward",
        "outside",
        1,
    ),
    # json.loads keeps the last of a key given twice: the row would train on 9
    (
        "duplicate key",
        b'{"instruction": "p", "completions": [{"response": "a", "overall_score": 1, "overall_score": 9}]}',
        "*",
        "'overall_score' given twice",
        1,
    ),
    ("nested 3000 deep", b'{"instruction": "p", "completions": ' + b"[" * 3000 + b"]" * 3000 + b"}", "*", "nested", 1),
    ("nested 40 deep", b'{"instruction": "p", "x": ' + b"[" * 40 + b"]" * 40 + b"}", "*", "nested deeper", 1),
    ("reward of 400 digits", _record([_completion(10**400), _completion(2)]), "reward", "too large for a float", 2),
    (
        "lone surrogate",
        b'{"instruction": "p", "completions": [{"response": "cut \\ud83d", "overall_score": 1}, '
        + json.dumps(_completion(2)).encode()
        + b"]}",
        "response",
        "invalid Unicode",
        2,
    ),
    (
        "zero-width only",
        _record([{"response": "\u200b\u200d \ufeff\u2060", "overall_score": 1}, _completion(2)]),
        "response",
        "empty or not text",
        2,
    ),
    (
        "instruction and prompt differ",
        json.dumps({"instruction": "one", "prompt": "another", "completions": [_completion(1)]}).encode(),
        "prompt",
        "both 'instruction' and 'prompt'",
        1,
    ),
]


def _config(tmp_path, data_path, mode, **data):
    path = tmp_path / "c.yaml"
    data = {
        "source": "jsonl",
        "layout": "ultrafeedback",
        "reward_field": "overall_score",
        "path": str(data_path),
        "n_eval_prompts": 2,
        "dvc": False,
        "on_bad_rows": mode,
        **data,
    }
    path.write_text(
        json.dumps(
            {"name": "d", "methods": ["rpo"], "models": {"m": {"arch": "causal", "source": "tiny"}}, "data": data}
        )
    )
    return str(path)


def _file_with(tmp_path, bad: bytes, position: int = 5) -> tuple:
    lines = [json.dumps(r).encode() for r in GOOD]
    lines.insert(position, bad)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, position + 1  # 1-based line of the bad record


def _prepare(config_path, out) -> int:
    return main(["prepare-data", "--config", config_path, "--out-dir", str(out)])


def _rejects(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _accounting_adds_up(out) -> dict:
    acc = json.loads((out / "manifest.json").read_text())["accounting"]
    assert acc["input_rows"] == acc["kept_train"] + acc["kept_eval"] + acc["eval_unused"] + acc["rejected"]
    assert acc["kept_train"] == len(pd.read_parquet(out / "train.parquet"))
    assert acc["kept_eval"] == len(pd.read_parquet(out / "eval.parquet"))
    return acc


@pytest.mark.parametrize("name, bad, fieldname, reason, rows", CASES, ids=[c[0] for c in CASES])
def test_each_defect_is_named_in_error_mode_and_a_counted_reject_in_drop_mode(
    tmp_path, capsys, name, bad, fieldname, reason, rows
):
    path, line = _file_with(tmp_path, bad)
    out = tmp_path / "out"
    assert _prepare(_config(tmp_path, path, "error"), out) == 2
    err = capsys.readouterr().err
    assert f"{path}: line {line}" in err and f"field '{fieldname}'" in err and reason in err, err
    assert "Traceback" not in err
    assert [r["line"] for r in _rejects(out)] and all(r["line"] == line for r in _rejects(out))
    assert not (out / "train.parquet").exists()

    assert _prepare(_config(tmp_path, path, "drop"), out) == 0
    rejects = _rejects(out)
    assert rejects and all(r["line"] == line and r["file"] == str(path) for r in rejects)
    assert any(r["field"] == fieldname and reason in r["reason"] for r in rejects)
    acc = _accounting_adds_up(out)
    assert acc["input_rows"] == 48 + rows and acc["rejected"] == len(rejects)
    assert acc["kept_train"] + acc["kept_eval"] + acc["eval_unused"] >= 48  # no row of the good records lost


def test_a_clean_file_accounts_for_every_row_held_out_ones_included(tmp_path):
    path, _ = _file_with(tmp_path, json.dumps(GOOD[0] | {"instruction": "One more prompt."}).encode())
    out = tmp_path / "out"
    assert _prepare(_config(tmp_path, path, "error"), out) == 0
    acc = _accounting_adds_up(out)
    assert acc == {"input_rows": 52, "kept_train": 44, "kept_eval": 2, "eval_unused": 6, "rejected": 0}


def test_a_byte_order_mark_costs_no_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in GOOD))
    out = tmp_path / "out"
    assert _prepare(_config(tmp_path, path, "drop"), out) == 0
    assert _rejects(out) == [] and _accounting_adds_up(out)["input_rows"] == 48


@pytest.mark.parametrize(
    "make, source, words",
    [
        (lambda p: p.mkdir() or p, "jsonl", "not a file"),
        (lambda p: p, "jsonl", "data file not found"),
        (lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in GOOD)) and p, "parquet", "not a Parquet file"),
        (lambda p: pd.DataFrame({"instruction": ["x"]}).to_parquet(p) or p, "jsonl", "a Parquet file, read as JSON"),
        (lambda p: p.write_bytes(b"PAR1 and then garbage") and p, "parquet", "unreadable Parquet file"),
    ],
    ids=["a folder", "missing", "jsonl as parquet", "parquet as jsonl", "damaged parquet"],
)
def test_path_and_format_errors_are_one_line(tmp_path, capsys, make, source, words):
    path = make(tmp_path / "data")
    assert _prepare(_config(tmp_path, path, "drop", source=source), tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert words in err and str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _flat_rows(column_of):
    """GOOD as one row per completion (triplets), each row's prompt under the column column_of(i) names."""
    rows = []
    for record in GOOD:
        for item in record["completions"]:
            key = column_of(len(rows))
            rows.append({key: record["instruction"], "response": item["response"], "reward": item["overall_score"]})
    return rows


@pytest.mark.parametrize("source", ["jsonl", "parquet"])
def test_mixed_instruction_and_prompt_columns_keep_every_row_by_one_rule(tmp_path, source):
    """A file whose rows name the prompt `instruction` or `prompt` (Parquet: both columns, nulls in the other)."""
    rows = _flat_rows(lambda i: "instruction" if i % 2 else "prompt")
    path = tmp_path / f"mixed.{source}"
    if source == "parquet":
        pd.DataFrame(rows).to_parquet(path)  # both columns; each row's other one is null
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert _prepare(_config(tmp_path, path, "error", source=source, layout="triplets", reward_field="reward"), out) == 0
    acc = _accounting_adds_up(out)
    assert acc["input_rows"] == 48 and acc["rejected"] == 0


def test_a_held_out_prompt_keeps_no_training_copy_that_differs_only_by_normalisation(tmp_path):
    """The test set leaks into training when a copy of a held-out prompt differs by a trailing newline or by
    Unicode normalisation (NFD accents)."""
    import unicodedata

    from rpo.data.sources import identity

    records = [dict(r, instruction=r["instruction"] + " café") for r in GOOD]  # NFC accent
    variants = []
    for i, record in enumerate(records):
        text = record["instruction"] + "\n" if i % 2 else unicodedata.normalize("NFD", record["instruction"])
        completions = [dict(c, response=c["response"] + " (again)") for c in record["completions"]]
        variants.append(dict(record, instruction=text, completions=completions))
    path = tmp_path / "variants.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records + variants))
    out = tmp_path / "out"
    assert _prepare(_config(tmp_path, path, "error", n_eval_prompts=4), out) == 0
    train, held = pd.read_parquet(out / "train.parquet"), pd.read_parquet(out / "eval.parquet")
    assert not set(train["prompt"].map(identity)) & set(held["prompt"].map(identity))
    leakage = json.loads((out / "manifest.json").read_text())["leakage"]
    assert leakage["held_out_prompts_in_train"] == 0
    assert leakage["train_rows_dropped_as_normalised_copies_of_held_out"] >= 4 * 4  # each held-out prompt's copy
    assert leakage["prompts_differing_only_by_normalisation"] == 24
    _accounting_adds_up(out)
