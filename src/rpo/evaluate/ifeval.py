"""IFEval's verifiable instructions, checked programmatically (Zhou et al. 2023, google/IFEval).

Strict: the response as written must satisfy the instruction. Loose: any of eight variants passes (the
response with its first line, last line or both removed, each also with '*' removed), as in the reference
implementation. Sentences are split on . ! ? followed by whitespace (the reference uses a tokenizer-based
splitter, so counts can differ on abbreviations). `language:response_language` needs `langdetect`; instructions
this module does not know are reported as unsupported and left out of the accuracies.
"""

from __future__ import annotations

import json
import re


def _compare(count: int, target: int, relation: str) -> bool:
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise ValueError(f"unknown relation '{relation}' (expected 'less than' or 'at least')")


def _words(text: str) -> list[str]:
    return re.findall(r"\b\w+\b", text)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def _paragraphs(text: str, separator: str) -> list[str]:
    return [p for p in re.split(separator, text) if p.strip()]


def _json(text: str) -> bool:
    body = text.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON").removeprefix("```")
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


def _language(text: str, language: str) -> bool:
    try:
        import langdetect
    except ImportError as exc:
        raise NotImplementedError("language:response_language needs `pip install langdetect`") from exc
    try:
        return langdetect.detect(text) == language
    except langdetect.LangDetectException:
        return True  # the reference counts undetectable text as passing


def _two_responses(text: str) -> bool:
    parts = [p.strip() for p in text.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _sections(text: str, splitter: str, n: int) -> bool:
    parts = re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", text)
    return len(parts) - 1 >= n


def _nth_paragraph(text: str, n_paragraphs: int, nth: int, first_word: str) -> bool:
    paragraphs = re.split(r"\n\n", text)
    if sum(bool(p.strip()) for p in paragraphs) != n_paragraphs or nth > len(paragraphs):
        return False
    paragraph = paragraphs[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'\"").rstrip(".,!?;:'\"")
    return word.lower() == first_word.lower()


CHECKS = {
    "keywords:existence": lambda r, kw: all(re.search(re.escape(k), r, re.I) for k in kw["keywords"]),
    "keywords:frequency": lambda r, kw: _compare(
        len(re.findall(re.escape(kw["keyword"]), r, re.I)), kw["frequency"], kw["relation"]
    ),
    "keywords:forbidden_words": lambda r, kw: (
        not any(re.search(r"\b" + re.escape(w) + r"\b", r, re.I) for w in kw["forbidden_words"])
    ),
    "keywords:letter_frequency": lambda r, kw: _compare(
        r.lower().count(kw["letter"].lower()), kw["let_frequency"], kw["let_relation"]
    ),
    "language:response_language": lambda r, kw: _language(r, kw["language"]),
    "length_constraints:number_sentences": lambda r, kw: _compare(
        len(_sentences(r)), kw["num_sentences"], kw["relation"]
    ),
    "length_constraints:number_paragraphs": lambda r, kw: (
        len(_paragraphs(r, r"\s?\*\*\*\s?")) == kw["num_paragraphs"] and not re.search(r"\*\*\*\s*\*\*\*", r)
    ),
    "length_constraints:number_words": lambda r, kw: _compare(len(_words(r)), kw["num_words"], kw["relation"]),
    "length_constraints:nth_paragraph_first_word": lambda r, kw: _nth_paragraph(
        r, kw["num_paragraphs"], kw["nth_paragraph"], kw["first_word"]
    ),
    "detectable_content:number_placeholders": lambda r, kw: len(re.findall(r"\[.*?\]", r)) >= kw["num_placeholders"],
    "detectable_content:postscript": lambda r, kw: bool(
        re.search(r"\s*" + re.escape(kw["postscript_marker"].lower()) + r".*$", r.lower(), re.MULTILINE)
    ),
    "detectable_format:number_bullet_lists": lambda r, kw: (
        len(re.findall(r"^\s*[*-][^*-].*$", r, re.MULTILINE)) == kw["num_bullets"]
    ),
    "detectable_format:constrained_response": lambda r, kw: any(
        option in r.strip() for option in ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    ),
    "detectable_format:number_highlighted_sections": lambda r, kw: (
        sum(bool(h.strip("*").strip()) for h in re.findall(r"\*[^\n\*]*\*", r))
        + sum(bool(h.strip("*").strip()) for h in re.findall(r"\*\*[^\n\*]*\*\*", r))
        >= kw["num_highlights"]
    ),
    "detectable_format:multiple_sections": lambda r, kw: _sections(r, kw["section_spliter"], kw["num_sections"]),
    "detectable_format:json_format": lambda r, kw: _json(r),
    "detectable_format:title": lambda r, kw: any(t.strip("<>").strip() for t in re.findall(r"<<[^\n]+>>", r)),
    "combination:two_responses": lambda r, kw: _two_responses(r),
    "combination:repeat_prompt": lambda r, kw: r.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower()),
    "startend:end_checker": lambda r, kw: r.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower()),
    "startend:quotation": lambda r, kw: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "change_case:capital_word_frequency": lambda r, kw: _compare(
        sum(w.isupper() for w in _words(r)), kw["capital_frequency"], kw["capital_relation"]
    ),
    "change_case:english_capital": lambda r, kw: r == r.upper(),
    "change_case:english_lowercase": lambda r, kw: r == r.lower(),
    "punctuation:no_comma": lambda r, kw: "," not in r,
}


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return cut + [c.replace("*", "") for c in cut]


def check(instruction_id: str, response: str, kwargs: dict | None, loose: bool = False) -> bool | None:
    """Whether `response` follows one instruction; None when the instruction is not supported here."""
    fn = CHECKS.get(instruction_id)
    if fn is None:
        return None
    kwargs = {k: v for k, v in (kwargs or {}).items() if v is not None}
    candidates = loose_variants(response) if loose else [response]
    try:
        return any(bool(c.strip()) and fn(c, kwargs) for c in candidates)
    except NotImplementedError:
        return None


def evaluate(rows: list[dict]) -> dict:
    """Prompt- and instruction-level accuracy, strict and loose, over rows with `instruction_id_list`, `kwargs`,
    `generation`. A prompt counts only if every one of its instructions is supported."""
    result = {"prompts": 0, "instructions": 0, "unsupported": {}}
    sums = {f"{level}_{mode}": 0 for level in ("prompt", "instruction") for mode in ("strict", "loose")}
    for row in rows:
        ids, kwargs = row["instruction_id_list"], row.get("kwargs") or [{}] * len(row["instruction_id_list"])
        outcomes = {"strict": [], "loose": []}
        for instruction_id, kw in zip(ids, kwargs):
            strict = check(instruction_id, row["generation"], kw)
            if strict is None:
                result["unsupported"][instruction_id] = result["unsupported"].get(instruction_id, 0) + 1
                outcomes = None
                break
            outcomes["strict"].append(strict)
            outcomes["loose"].append(check(instruction_id, row["generation"], kw, loose=True))
        if outcomes is None:
            continue
        result["prompts"] += 1
        result["instructions"] += len(ids)
        for mode in ("strict", "loose"):
            sums[f"prompt_{mode}"] += all(outcomes[mode])
            sums[f"instruction_{mode}"] += sum(outcomes[mode])
    for key, total in sums.items():
        denominator = result["prompts"] if key.startswith("prompt") else result["instructions"]
        result[key] = 100.0 * total / denominator if denominator else None
    return result
