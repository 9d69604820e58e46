"""Is the loss computation itself negligible? Times each objective's loss + backward on a batch of 64
per-sequence log-probs against one forward + backward of the tiny Llama-style model on the same batch.

    python benchmarks/objectives.py            # prints a table; target: every objective < 1% of fwd+bwd
"""

from __future__ import annotations

import time

import torch

from rpo import config
from rpo.data import synthetic
from rpo.models import batching, build, logprobs
from rpo.train import objectives

BATCH, REPEATS = 64, 20


def best_time(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    cfg = config.load("config/tiny.yaml")
    spec = cfg["models"]["llama-tiny"]
    rows = synthetic.dataset(BATCH, 1, seed=0)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    tokenizer = build.build_tokenizer(prompts + responses, spec["tiny"]["vocab_size"])
    model = build.build_tiny_model("causal", tokenizer, spec["tiny"])
    batch = batching.encode(tokenizer, "causal", prompts, responses, 512, 512)

    def model_step():
        model.zero_grad(set_to_none=True)
        logprobs.sequence_logprobs(model, batch)[0].sum().backward()

    model_time = best_time(model_step)

    gen = torch.Generator().manual_seed(0)
    policy = (-30 + torch.randn(BATCH, generator=gen)).requires_grad_()
    value = torch.zeros(BATCH, requires_grad=True)
    inputs = {
        "ref_logp": -30 + torch.randn(BATCH, generator=gen),
        "reward": torch.randn(BATCH, generator=gen),
        "v_hat": torch.randn(BATCH, generator=gen),
        "desirable": (torch.rand(BATCH, generator=gen) > 0.5).float(),
        "policy_kl_logp": -31 + torch.randn(BATCH, generator=gen),
        "ref_kl_logp": -31 + torch.randn(BATCH, generator=gen),
        "n_tokens": torch.full((BATCH,), 20.0),
    }

    print(
        f"tiny Llama-style model ({sum(p.numel() for p in model.parameters()):,} parameters), batch {BATCH}, "
        f"{batch.input_ids.shape[1]} tokens: forward+backward {model_time * 1e3:.2f} ms (best of {REPEATS})\n"
    )
    print("| objective | loss+backward (ms) | share of forward+backward |\n|---|---|---|")
    for name, objective in objectives.REGISTRY.items():

        def loss_step(objective=objective):
            policy.grad = value.grad = None
            loss, _ = objective.loss({**inputs, "policy_logp": policy, "token_logp_sum": policy, "value": value}, cfg)
            loss.backward()

        t = best_time(loss_step)
        print(f"| {name} | {t * 1e3:.3f} | {100 * t / model_time:.2f}% |")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options; --help says what it does
    torch.set_num_threads(2)
    main()
