"""DRO's value models on both architectures: one value per sequence, trained by the DRO loss."""

import pytest
import torch

from rpo import config
from rpo.models import batching, build, logprobs, value
from rpo.train import objectives

TEXTS = ["Write about cats. Use at most 8 words.", "Write about the sea.", "today cats purr.", "waves and salt."]


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
@pytest.mark.parametrize("kind", ["head", "separate"])
def test_value_model_predicts_one_value_per_sequence_and_learns(arch, kind):
    cfg = config.resolve(
        {
            "name": "t",
            "methods": ["dro"],
            "models": {"m": {"arch": arch, "source": "tiny"}},
            "objective": {"dro": {"value_model": kind, "value_width": 16}},
        }
    )
    tokenizer = build.build_tokenizer(TEXTS, 300)
    model = build.build_tiny_model(
        arch, tokenizer, {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    )
    build.disable_dropout(model)
    net = value.build(cfg, model)
    batch = batching.encode(tokenizer, arch, TEXTS[:2] * 2, TEXTS[2:] * 2, 64, 32)
    scores = logprobs.score(model, batch, prompt_repr=net.uses_prompt_repr)
    values = net(batch, scores.prompt_repr)
    assert values.shape == (4,)

    # the same prompt gets the same value whatever the response: V depends on x only
    assert torch.allclose(values[0], values[2]) and torch.allclose(values[1], values[3])

    reward = torch.tensor([1.0, -1.0, 1.0, -1.0])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        scores = logprobs.score(model, batch, prompt_repr=net.uses_prompt_repr)
        inputs = {
            "policy_logp": scores.sum_logp.detach(),
            "ref_logp": scores.sum_logp.detach(),
            "reward": reward,
            "value": net(batch, scores.prompt_repr),
        }
        loss, _ = objectives.dro_loss(inputs, cfg)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
