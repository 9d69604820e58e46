"""Log-probabilities of response tokens: one forward pass per batch, summed or averaged per sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from rpo.models.batching import Batch


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position, zero where mask is 0 ([B, T, V] -> [B, T])."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps * mask


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@dataclass
class Scores:
    token_logps: torch.Tensor  # [B, T], zero outside the response
    mask: torch.Tensor  # [B, T], 1 on scored response tokens
    prompt_repr: torch.Tensor | None = None  # [B, H], masked mean of the prompt's last hidden states

    @property
    def sum_logp(self) -> torch.Tensor:
        return self.token_logps.sum(-1)

    @property
    def n_tokens(self) -> torch.Tensor:
        return self.mask.sum(-1)


def chunked_logprobs(
    lm_head, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """gather_logprobs(lm_head(hidden), ...) without the [B, T, V] logits: the output layer runs on scored
    positions only, chunk_size rows at a time, and each chunk's float32 logits are recomputed in the
    backward pass instead of kept."""

    def piece(h, t):
        return gather_logprobs(lm_head(h), t, torch.ones_like(t))

    keep = mask.bool()
    h, t = hidden[keep], targets[keep]
    values = [
        checkpoint(piece, h[i : i + chunk_size], t[i : i + chunk_size], use_reentrant=False)
        for i in range(0, len(t), chunk_size)
    ]
    flat = torch.cat(values) if values else hidden.new_zeros(0)
    return torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device).masked_scatter(keep, flat)


def _plain_output_layer(model) -> bool:
    """True when logits are just lm_head(last hidden state): no soft-capping or scaling to reproduce."""
    config = getattr(model, "module", model).config
    return not any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))


def score(model, batch: Batch, prompt_repr: bool = False, chunk_size: int = 0) -> Scores:
    """One forward pass: log-prob of each response token, and optionally a pooled prompt representation.
    chunk_size > 0 (causal models): see chunked_logprobs."""
    if batch.labels is None:
        chunked = chunk_size > 0 and _plain_output_layer(model)
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=prompt_repr or chunked,
            **({"logits_to_keep": 1} if chunked else {}),
        )
        targets, mask = batch.input_ids[:, 1:], batch.response_mask[:, 1:]
        if chunked:
            lm_head = getattr(model, "module", model).get_output_embeddings()
            logps = chunked_logprobs(lm_head, out.hidden_states[-1][:, :-1], targets, mask, chunk_size)
        else:
            logps = gather_logprobs(out.logits[:, :-1], targets, mask)
        pooled = _pool(out.hidden_states[-1], batch.attention_mask * (1 - batch.response_mask)) if prompt_repr else None
    else:
        core = getattr(model, "module", model)  # under DistributedDataParallel
        decoder_input_ids = core.prepare_decoder_input_ids_from_labels(labels=batch.labels)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=decoder_input_ids)
        logps = gather_logprobs(out.logits, batch.labels, batch.response_mask)
        mask = batch.response_mask
        pooled = _pool(out.encoder_last_hidden_state, batch.attention_mask) if prompt_repr else None
    return Scores(logps, mask, pooled)


def sequence_logprobs(model, batch: Batch, chunk_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-prob and response token count per sequence."""
    scores = score(model, batch, chunk_size=chunk_size)
    return scores.sum_logp, scores.n_tokens


def reduce(sum_logp: torch.Tensor, n_tokens: torch.Tensor, reduction: str) -> torch.Tensor:
    """`sum` over response tokens (default) or `mean` (the released code's choice)."""
    return sum_logp if reduction == "sum" else sum_logp / n_tokens.clamp(min=1)


def scored_mask(batch: Batch) -> torch.Tensor:
    """[B, T] 1 where a position's output is scored: causal position t predicts token t+1 of the response."""
    return batch.response_mask[:, 1:] if batch.labels is None else batch.response_mask


def token_distributions(model, batch: Batch) -> torch.Tensor:
    """log softmax over the whole vocabulary at every scored response position, [positions, V] in float32, rows in
    the order of scored_mask(batch).nonzero()."""
    if batch.labels is None:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    else:
        core = getattr(model, "module", model)
        decoder_input_ids = core.prepare_decoder_input_ids_from_labels(labels=batch.labels)
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=decoder_input_ids
        ).logits
    return torch.log_softmax(logits[scored_mask(batch).bool()].float(), dim=-1)
