"""DRO's value model V_phi(x): a head on the policy's prompt representation, or a separate small network."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """MLP (hidden -> width -> tanh -> 1) on the masked mean of the policy's prompt hidden states
    (the released DRO script's head, with padding masked out of the mean)."""

    uses_prompt_repr = True

    def __init__(self, hidden_size: int, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, batch, prompt_repr: torch.Tensor) -> torch.Tensor:
        return self.mlp(prompt_repr.float()).squeeze(-1)


class SeparateValueNet(nn.Module):
    """Its own embedding of the prompt tokens (mean over the prompt), then an MLP: shares nothing with the policy."""

    uses_prompt_repr = False

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, width, mode="sum")
        self.mlp = nn.Sequential(nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, batch, prompt_repr=None) -> torch.Tensor:
        prompt_mask = (
            batch.attention_mask if batch.labels is not None else batch.attention_mask * (1 - batch.response_mask)
        )
        weights = prompt_mask.float() / prompt_mask.sum(-1, keepdim=True).clamp(min=1)
        return self.mlp(self.embed(batch.input_ids, per_sample_weights=weights)).squeeze(-1)


def build(cfg: dict, model) -> nn.Module:
    dro = cfg["objective"]["dro"]
    if dro["value_model"] == "head":
        hidden = getattr(model.config, "hidden_size", None) or model.config.d_model
        return ValueHead(hidden, dro["value_width"])
    return SeparateValueNet(model.config.vocab_size, dro["value_width"])
