"""KL(pi_theta || pi_ref) on held-out prompts, from responses sampled from the policy (Figure 2)."""

from __future__ import annotations

import torch

from rpo.models import batching, logprobs


def _until_eos(ids: list[int], eos: int, pad: int) -> list[int]:
    out = []
    for token in ids:
        if token == pad and not out:
            continue
        out.append(token)
        if token == eos:
            break
    return out


@torch.no_grad()
def estimate(
    policy,
    reference,
    tokenizer,
    arch: str,
    prompts: list[str],
    max_prompt_len: int,
    max_new_tokens: int,
    seed: int,
    chat_template: bool = False,
) -> dict:
    """Mean over prompts of sum_t [log pi_theta(y_t|...) - log pi_ref(y_t|...)], y ~ pi_theta (plain sampling)."""
    was_training = policy.training
    policy.eval()
    input_ids, attention_mask = batching.encode_prompts(tokenizer, arch, prompts, max_prompt_len, chat_template)
    input_ids, attention_mask = input_ids.to(policy.device), attention_mask.to(policy.device)
    with torch.random.fork_rng(
        devices=[policy.device] if policy.device.type == "cuda" else []
    ):  # leave the training RNG untouched, so resumed runs match
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
        )
    policy.train(was_training)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if arch == "causal":
        prompt_ids = [
            [t for t, m in zip(row, mask) if m] for row, mask in zip(input_ids.tolist(), attention_mask.tolist())
        ]
        generated = [_until_eos(row, eos, pad) for row in output[:, input_ids.shape[1] :].tolist()]
    else:
        prompt_ids = [
            [t for t, m in zip(row, mask) if m][:-1] for row, mask in zip(input_ids.tolist(), attention_mask.tolist())
        ]
        generated = [_until_eos(row[1:], eos, pad) for row in output.tolist()]  # drop the decoder start token
    keep = [i for i, g in enumerate(generated) if g]
    batch = batching.batch_from_ids(tokenizer, arch, [prompt_ids[i] for i in keep], [generated[i] for i in keep]).to(
        policy.device
    )
    log_ratio = logprobs.score(policy, batch).sum_logp - logprobs.score(reference, batch).sum_logp
    return {
        "kl": log_ratio.mean().item(),
        "kl_std": log_ratio.std().item() if len(keep) > 1 else 0.0,
        "kl_samples": len(keep),
        "kl_response_tokens": batch.response_mask.sum().item() / max(len(keep), 1),
    }
