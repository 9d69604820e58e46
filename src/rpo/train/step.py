"""One micro-batch of training rows -> the objective's inputs -> its loss."""

from __future__ import annotations

import pandas as pd
import torch

from rpo.models import batching, logprobs


class Step:
    """Turns one micro-batch of training rows into the objective's inputs and its loss.

    The table is tokenised and padded once (`batching.PaddedTable`) and its per-row fields turned into tensors once;
    a micro-batch is then an index into them. Nothing here reads a value back to the host: the loss, the metrics
    and the token count stay tensors on the device until the loop reads them once per log interval.

    Under data parallelism each process holds a slice of the global micro-batch; `acc` (an
    accelerate.Accelerator) supplies what must be global: the token count SFT averages over and
    the mismatched pairs KTO's reference point averages over (TRL gathers those too).
    """

    def __init__(self, cfg, spec, objective, model, tokenizer, value_net, acc=None, table: pd.DataFrame = None):
        self.cfg, self.spec, self.objective, self.acc = cfg, spec, objective, acc
        self.model, self.tokenizer, self.value_net = model, tokenizer, value_net
        self.device = acc.device if acc is not None else torch.device("cpu")
        self.kl_pairs = objective.needs_kl_pairs(cfg)
        self.fields = (
            ["reward", *objective.row_fields]
            + (["ref_logp"] if objective.needs_reference else [])
            + (["ref_kl_logp"] if self.kl_pairs else [])
        )
        self.tokenized = self.tokenize(table["prompt"].tolist(), table["response"].tolist())
        self.pairs = batching.PaddedTable(tokenizer, spec["arch"], self.tokenized)
        self.kl_pairs_table = (
            batching.PaddedTable(
                tokenizer, spec["arch"], self.tokenize(table["prompt"].tolist(), table["kl_response"].tolist())
            )
            if self.kl_pairs
            else None
        )
        self.values = {
            name: torch.tensor(table[name].to_numpy(), dtype=torch.float32, device=self.device) for name in self.fields
        }

    def tokenize(self, prompts, responses) -> batching.Tokenized:
        tcfg = self.cfg["train"]
        return batching.tokenize(
            self.tokenizer,
            prompts,
            responses,
            tcfg["max_prompt_len"],
            tcfg["max_response_len"],
            self.spec["chat_template"],
        )

    def _global(self, tensor, op):
        if self.acc is None or self.acc.num_processes == 1:
            return tensor
        return self.acc.reduce(tensor, op) if op == "sum" else self.acc.gather(tensor)

    def __call__(self, rows: torch.Tensor):
        """(loss, metrics, tokens) of the rows with these indices; metrics and tokens are 0-d tensors."""
        reduction = self.cfg["objective"]["logprob_reduction"]
        batch = self.pairs.batch(rows).to(self.device)
        chunk = self.cfg["train"]["logprob_chunk_size"]
        scores = logprobs.score(
            self.model, batch, prompt_repr=getattr(self.value_net, "uses_prompt_repr", False), chunk_size=chunk
        )
        on_device = rows.to(self.device)
        inputs = {name: values[on_device] for name, values in self.values.items()}
        world = self.acc.num_processes if self.acc is not None else 1
        inputs.update(
            token_logp_sum=scores.sum_logp,
            n_tokens=scores.n_tokens,
            policy_logp=logprobs.reduce(scores.sum_logp, scores.n_tokens, reduction),
            token_normaliser=self._global(scores.n_tokens.sum().float(), "sum") / world,
        )
        if self.value_net is not None:
            inputs["value"] = self.value_net(batch, scores.prompt_repr)
        if self.kl_pairs:
            with torch.no_grad():
                kl_batch = self.kl_pairs_table.batch(rows).to(self.device)
                policy_kl = logprobs.reduce(*logprobs.sequence_logprobs(self.model, kl_batch, chunk), reduction)
            inputs["policy_kl_logp"] = self._global(policy_kl, "gather")
            inputs["ref_kl_logp"] = self._global(inputs["ref_kl_logp"], "gather")
        loss, metrics = self.objective.loss(inputs, self.cfg)
        n_tokens = batch.attention_mask.sum() + (batch.response_mask.sum() if batch.labels is not None else 0)
        return loss, metrics, n_tokens
