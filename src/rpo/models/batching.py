"""Tokenised batches for both architectures: (prompt, response) pairs to score, prompts to generate from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Tokenised (prompt, response) pairs; `response_mask` marks the tokens that are scored."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    labels: torch.Tensor | None = None  # seq2seq only: decoder targets, padding = pad id

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.response_mask), move(self.labels))


def pad_ids(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def format_prompts(tokenizer, prompts: list, chat_template: bool) -> list[str]:
    """The tokenizer's chat template around each prompt, when the config asks and the tokenizer has one.

    A prompt is a string (one user turn) or a conversation: a list of {"role", "content"} messages ending with a
    user turn. Without a chat template a conversation becomes its turns joined by blank lines."""
    conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    if not chat_template or not getattr(tokenizer, "chat_template", None):
        return ["\n\n".join(m["content"] for m in c) for c in conversations]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]


@dataclass
class Tokenized:
    """(prompt, response) pairs as `encode` cuts them, and what each row lost to the length limits."""

    prompt_ids: list[list[int]]  # the last max_prompt_len tokens of each (formatted) prompt
    response_ids: list[list[int]]  # the first max_response_len - 1 tokens of each response, then EOS
    prompt_cut: list[int]  # tokens cut from each prompt
    response_cut: list[int]  # tokens cut from each response


def tokenize(
    tokenizer, prompts: list, responses: list[str], max_prompt_len: int, max_response_len: int, chat_template=False
) -> Tokenized:
    """One tokenizer pass over the pairs: their ids as scored, and the counts `truncation` reports."""
    formatted = format_prompts(tokenizer, prompts, chat_template)
    prompt_full = tokenizer(formatted, add_special_tokens=False)["input_ids"]
    response_full = tokenizer(responses, add_special_tokens=False)["input_ids"]
    return Tokenized(
        [ids[-max_prompt_len:] for ids in prompt_full],
        [ids[: max_response_len - 1] + [tokenizer.eos_token_id] for ids in response_full],
        [max(0, len(ids) - max_prompt_len) for ids in prompt_full],
        [max(0, len(ids) - (max_response_len - 1)) for ids in response_full],
    )


def encode(
    tokenizer,
    arch: str,
    prompts: list[str],
    responses: list[str],
    max_prompt_len: int,
    max_response_len: int,
    chat_template: bool = False,
) -> Batch:
    """Dynamic padding to the longest pair in the batch; the response ends with EOS."""
    ids = tokenize(tokenizer, prompts, responses, max_prompt_len, max_response_len, chat_template)
    return batch_from_ids(tokenizer, arch, ids.prompt_ids, ids.response_ids)


TRUNCATION_WARN_SHARE = 0.05  # above this share of cut rows, the step warns


def cut_counts(ids: Tokenized) -> dict:
    """How many rows lose tokens to the length limits (prompts keep their last max_prompt_len tokens, responses
    their first max_response_len - 1 before EOS), and how many tokens, in all and per row."""
    prompt_cut, response_cut = ids.prompt_cut, ids.response_cut
    rows_cut = sum(1 for p, r in zip(prompt_cut, response_cut) if p or r)
    return {
        "rows": len(prompt_cut),
        "rows_cut": rows_cut,
        "share_cut": rows_cut / max(len(prompt_cut), 1),
        "prompts_cut": sum(1 for p in prompt_cut if p),
        "responses_cut": sum(1 for r in response_cut if r),
        "prompt_tokens_cut": sum(prompt_cut),
        "response_tokens_cut": sum(response_cut),
        "per_row": (prompt_cut, response_cut),
    }


def truncation(
    tokenizer, prompts: list[str], responses: list[str], max_prompt_len: int, max_response_len: int, chat_template=False
) -> dict:
    """What `encode` cuts from these rows (cut_counts)."""
    return cut_counts(tokenize(tokenizer, prompts, responses, max_prompt_len, max_response_len, chat_template))


def truncation_warning(counts: dict, where: str) -> str | None:
    """One line when more than TRUNCATION_WARN_SHARE of the rows are cut."""
    if counts["share_cut"] <= TRUNCATION_WARN_SHARE:
        return None
    return (
        f"warning: {where}: {counts['rows_cut']} of {counts['rows']} rows ({counts['share_cut']:.0%}) are cut to "
        f"train.max_prompt_len / train.max_response_len ({counts['prompt_tokens_cut']} prompt and "
        f"{counts['response_tokens_cut']} response tokens dropped); raise the limits or shorten data.max_chars"
    )


def batch_from_ids(tokenizer, arch: str, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> Batch:
    """Right-padded (prompt, response) token ids; only response tokens are scored."""
    pad = tokenizer.pad_token_id
    if arch == "causal":
        seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
        masks = [[0] * len(p) + [1] * len(r) for p, r in zip(prompt_ids, response_ids)]
        return Batch(pad_ids(seqs, pad), pad_ids([[1] * len(s) for s in seqs], 0), pad_ids(masks, 0))
    enc = [p + [tokenizer.eos_token_id] for p in prompt_ids]
    return Batch(
        input_ids=pad_ids(enc, pad),
        attention_mask=pad_ids([[1] * len(e) for e in enc], 0),
        response_mask=pad_ids([[1] * len(r) for r in response_ids], 0),
        labels=pad_ids(response_ids, pad),
    )


class PaddedTable:
    """A whole table's pairs padded once (batch_from_ids over every row) and kept with each row's lengths, so that a
    batch is an index and a trim to its longest row: the same tensors batch_from_ids gives for those rows alone."""

    def __init__(self, tokenizer, arch: str, ids: Tokenized):
        self.full = batch_from_ids(tokenizer, arch, ids.prompt_ids, ids.response_ids)
        self.width = self.full.attention_mask.sum(1)  # causal: prompt + response; seq2seq: the encoder's input
        self.response_width = self.full.response_mask.sum(1)  # seq2seq: the decoder's
        self.lengths = self.width + (self.response_width if self.full.labels is not None else 0)  # tokens per row

    def batch(self, rows: torch.Tensor) -> Batch:
        full, width = self.full, int(self.width[rows].max())
        trim = lambda t, w: t[rows, :w]  # noqa: E731
        if full.labels is None:
            return Batch(trim(full.input_ids, width), trim(full.attention_mask, width), trim(full.response_mask, width))
        dec = int(self.response_width[rows].max())
        return Batch(
            trim(full.input_ids, width),
            trim(full.attention_mask, width),
            trim(full.response_mask, dec),
            trim(full.labels, dec),
        )


def encode_prompts(
    tokenizer, arch: str, prompts: list[str], max_prompt_len: int, chat_template: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for generation: left-padded for causal models, EOS-terminated for encoder-decoders."""
    prompts = format_prompts(tokenizer, prompts, chat_template)
    ids = [p[-max_prompt_len:] for p in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    if arch == "seq2seq":
        ids = [p + [tokenizer.eos_token_id] for p in ids]
        return pad_ids(ids, tokenizer.pad_token_id), pad_ids([[1] * len(p) for p in ids], 0)
    width = max(len(p) for p in ids)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in ids], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids], dtype=torch.long)
    return input_ids, mask


def until_eos(ids: list[int], eos: int) -> list[int]:
    """Sampled tokens up to and including the first EOS (what follows it is padding)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def generated_ids(input_ids, attention_mask, output, arch: str, eos: int) -> tuple[list[list[int]], list[list[int]]]:
    """From `generate`'s input and output: each row's prompt ids and sampled response ids, as batch_from_ids takes
    them (so that a sample's log-prob is scored on the very tokens drawn, not on a re-tokenisation of its text)."""
    prompt_ids = [[t for t, m in zip(row, mask) if m] for row, mask in zip(input_ids.tolist(), attention_mask.tolist())]
    if arch == "causal":
        return prompt_ids, [until_eos(row, eos) for row in output[:, input_ids.shape[1] :].tolist()]
    prompt_ids = [p[:-1] for p in prompt_ids]  # batch_from_ids appends the encoder's EOS again
    return prompt_ids, [until_eos(row[1:], eos) for row in output.tolist()]  # drop the decoder start token


def batch_slices(n: int, size: int):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]
