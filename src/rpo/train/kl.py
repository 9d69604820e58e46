"""KL(pi_theta || pi_ref) on held-out prompts, from responses sampled from the policy (Figure 2, Figure 3).

Two estimators over the same sampled responses y ~ pi_theta:
  per_token  sum_t KL(pi_theta(.|s_t) || pi_ref(.|s_t)), the exact KL over the vocabulary at every position the
             response visits: unbiased for the sequence KL (chain rule) and never negative (default)
  log_ratio  sum_t [log pi_theta(y_t|s_t) - log pi_ref(y_t|s_t)]: also unbiased, but a single-sample estimate per
             position, so it has far more variance and can be negative
"""

from __future__ import annotations

import torch

from rpo.models import batching, generation, logprobs

ESTIMATORS = ("per_token", "log_ratio")


@torch.no_grad()
def sample_responses(
    policy,
    tokenizer,
    arch: str,
    prompts: list,
    max_prompt_len: int,
    max_new_tokens: int,
    seed: int,
    chat_template: bool = False,
    with_distributions: bool = False,
):
    """One response per prompt from pi_theta by plain sampling (temperature 1, no top-k/top-p), as a scoring batch;
    prompts whose response is empty are left out (None: every response was empty). `with_distributions`: also
    pi_theta's log-distribution over the vocabulary at each sampled position, [positions, V] in float32 in the order
    of logprobs.scored_mask(batch).nonzero(), taken from the logits the sampling computed (no second forward pass)."""
    was_training = policy.training
    policy.eval()
    input_ids, attention_mask = batching.encode_prompts(tokenizer, arch, prompts, max_prompt_len, chat_template)
    input_ids, attention_mask = input_ids.to(policy.device), attention_mask.to(policy.device)
    devices = [policy.device] if policy.device.type == "cuda" else []
    carried = policy.generation_config
    policy.generation_config = generation.clean_generation_config(policy)  # pi_theta itself, whatever it carries
    with torch.random.fork_rng(devices=devices):  # leave the training RNG untouched, so resumed runs match
        torch.manual_seed(seed)
        output = policy.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            output_logits=with_distributions,
            return_dict_in_generate=True,
        )
    policy.generation_config = carried
    policy.train(was_training)
    prompt_ids, generated = batching.generated_ids(
        input_ids, attention_mask, output.sequences, arch, tokenizer.eos_token_id
    )
    keep = [i for i, g in enumerate(generated) if g]
    if not keep:
        return (None, None) if with_distributions else None
    batch = batching.batch_from_ids(tokenizer, arch, [prompt_ids[i] for i in keep], [generated[i] for i in keep])
    if not with_distributions:
        return batch.to(policy.device)
    logits = torch.stack(output.logits, 1)  # [B, steps, V]: step t's logits drew token t of the response
    positions = [logits[i, : len(generated[i])] for i in keep]
    return batch.to(policy.device), torch.log_softmax(torch.cat(positions).float(), dim=-1)


def per_token_kl(policy, reference, batch: batching.Batch, p: torch.Tensor | None = None) -> torch.Tensor:
    """sum over each response's positions of KL(pi_theta(.|s_t) || pi_ref(.|s_t)), per sequence [B]; `p`: pi_theta's
    log-distributions at those positions when the sampling already computed them."""
    p = logprobs.token_distributions(policy, batch) if p is None else p
    q = logprobs.token_distributions(reference, batch)
    per_position = (p.exp() * (p - q)).sum(-1).clamp(min=0)  # >= 0 exactly; the clamp removes float round-off
    rows = logprobs.scored_mask(batch).nonzero()[:, 0]
    return torch.zeros(len(batch.input_ids), dtype=per_position.dtype, device=per_position.device).index_add_(
        0, rows, per_position
    )


def log_ratio(policy, reference, batch: batching.Batch) -> torch.Tensor:
    """sum_t [log pi_theta(y_t) - log pi_ref(y_t)] per sequence [B]."""
    return logprobs.score(policy, batch).sum_logp - logprobs.score(reference, batch).sum_logp


@torch.no_grad()
def estimate(
    policy,
    reference,
    tokenizer,
    arch: str,
    prompts: list,
    max_prompt_len: int,
    max_new_tokens: int,
    seed: int,
    chat_template: bool = False,
    estimator: str = "per_token",
    batch_size: int = 64,
) -> dict:
    """Mean over prompts of the chosen estimator on one sampled response per prompt, and its std across prompts;
    `batch_size` prompts at a time, each batch sampled with its own seed."""
    was_training = policy.training
    policy.eval()
    values, tokens = [], 0
    per_token = estimator == "per_token"  # only it reads the policy's distributions
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        drawn = sample_responses(
            policy,
            tokenizer,
            arch,
            prompts[start : start + batch_size],
            max_prompt_len,
            max_new_tokens,
            seed * 1_000_003 + index,
            chat_template,
            with_distributions=per_token,
        )
        batch, p = drawn if per_token else (drawn, None)
        if batch is not None:
            values.append(
                per_token_kl(policy, reference, batch, p) if per_token else log_ratio(policy, reference, batch)
            )
            tokens += batch.response_mask.sum().item()
    policy.train(was_training)
    values = torch.cat(values) if values else torch.zeros(0)
    n = len(values)
    return {
        "kl": values.mean().item() if n else float("nan"),
        "kl_std": values.std().item() if n > 1 else 0.0,
        "kl_samples": n,
        "kl_response_tokens": tokens / max(n, 1),
    }
