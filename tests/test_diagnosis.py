"""The diagnosis (rpo.evaluate.diagnose): on a prompt whose responses can be enumerated (5 tokens, 3 new tokens at
most), the self-normalised estimate of KL(pi* || pi_theta) from reference samples, scored on their token ids,
matches the exact value for both architectures; pi_theta = pi_ref gives KL(pi* || pi_ref); and the fits say
slope 1, R^2 1 for a policy that is pi* itself."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_kl import PROMPT_IDS, WordTokenizer, every_response, tiny

from rpo.evaluate import diagnose
from rpo.models import batching, logprobs
from rpo.reference.logprobs import score_sampled
from rpo.report import diagnosis, optimum
from rpo.report.inputs import Inputs, degenerate_note, zero_share

BETA = 0.5


def reward(ids: list[int]) -> float:
    return ids.count(3) - 0.5 * ids.count(4) + (1.0 if ids[-1] == 1 else 0.0)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_kl_to_the_optimum_matches_the_exact_value_on_an_enumerable_prompt(arch):
    policy, reference = tiny(arch, 0, 1.5), tiny(arch, 1, 1.5)
    responses, tok = every_response(), WordTokenizer()
    batch = batching.batch_from_ids(tok, arch, [PROMPT_IDS] * len(responses), responses)
    with torch.no_grad():
        p = logprobs.score(policy, batch).sum_logp.double().numpy()
        q = logprobs.score(reference, batch).sum_logp.double().numpy()
    r = np.array([reward(y) for y in responses])
    log_star = q + r / BETA
    log_star -= np.logaddexp.reduce(log_star)
    exact = float((np.exp(log_star) * (log_star - p)).sum())
    exact_ref = float((np.exp(log_star) * (log_star - q)).sum())
    assert exact > 0.1 and exact_ref > 0.1

    drawn = np.random.default_rng(0).choice(len(responses), size=20000, p=np.exp(q) / np.exp(q).sum())
    rows = [{"prompt_ids": PROMPT_IDS, "response_ids": responses[i]} for i in drawn]
    h = score_sampled(policy, tok, arch, rows, 2000, "policy") - score_sampled(reference, tok, arch, rows, 2000, "ref")
    rewards = r[drawn][None, :]
    estimate = diagnose.kl_to_optimum(rewards, h[None, :], BETA)[0]
    assert abs(estimate - exact) < 0.03 * exact + 0.01, (estimate, exact)  # Monte Carlo error of 20,000 samples
    against_reference = diagnose.kl_to_optimum(rewards, np.zeros_like(rewards), BETA)[0]
    assert abs(against_reference - exact_ref) < 0.03 * exact_ref + 0.01
    _, kl_star = optimum.snis(rewards, rewards, BETA)  # the optimum's own estimate of KL(pi* || pi_ref)
    assert abs(against_reference - kl_star[0]) < 1e-9


def test_the_fits_of_pi_star_itself_have_slope_one_and_r2_one():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(20, 16))
    h = rewards / BETA + rng.normal(size=(20, 1))  # log pi*/pi_ref = r/beta - log Z(x): a constant per prompt
    fit = diagnose.implied_reward_fit(rewards, h, BETA)
    assert abs(fit["slope"] - 1) < 1e-9 and abs(fit["r2"] - 1) < 1e-9
    assert diagnose.fit(rewards.ravel(), np.zeros(rewards.size)) == {"slope": 0.0, "r2": 0.0}
    noisy = diagnose.fit(rewards.ravel(), 0.5 * rewards.ravel() + rng.normal(size=rewards.size))
    assert 0.3 < noisy["slope"] < 0.7 and noisy["r2"] < 0.5


def _write_samples(path, model, prompts, rewards):
    rows = [
        {"model": model, "prompt_id": p, "sample": j, "reward": float(r), "reward_raw": float(r)}
        for p, row in zip(prompts, rewards)
        for j, r in enumerate(row)
    ]
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)


def test_the_partition_error_is_measured_on_each_models_own_training_table(tmp_path):
    """Two models train on the same prompts with different completions: each V_hat error comes from its own table."""
    cfg = {
        "models": {"a": {}, "b": {}},
        "objective": {"beta": 1.0},
        "optimum": {"train_prompts": 2},
        "score": {"bootstrap": {"samples": 50, "confidence": 0.95, "seed": 0}},
        "methods": ["rpo"],
    }
    prompts = ["p0", "p1"]
    paths = []
    for model, offset in (("a", 0.0), ("b", 2.0)):
        folder = tmp_path / model
        (folder / "data").mkdir(parents=True)
        (folder / "reference").mkdir()
        train = pd.DataFrame({"prompt_id": ["p0", "p0", "p1", "p1"], "reward": [offset, offset, 1.0, 1.0]})
        train.to_parquet(folder / "data" / "train.parquet")
        for name in ("optimum_samples.jsonl", "optimum_train_samples.jsonl"):
            _write_samples(folder / "reference" / name, model, prompts, np.zeros((2, 8)))
            paths.append(folder / "reference" / name)
        paths.append(folder / "data" / "train.parquet")
    _, _, _, tidy = diagnosis.table(cfg, Inputs(paths), lambda v, d, lo=0, hi=0: f"{v:.{d}f}")
    bias = tidy[(tidy["row"] == "V_hat error") & (tidy["metric"] == "bias")].set_index("model")["value"]
    # V from the reference's samples is 0; V_hat is the mean of each prompt's completions: (0 + 1) / 2 and (2 + 1) / 2
    assert bias["a"] == pytest.approx(0.5) and bias["b"] == pytest.approx(1.5)


def test_a_zero_target_is_marked_with_its_share_in_the_tables(tmp_path):
    (tmp_path / "train.json").write_text(
        json.dumps({"model": "m", "method": "rpo", "ablation": "density0.25", "seed": 0, "target_zero_share": 1.0})
    )
    inputs = Inputs([tmp_path / "train.json"])
    assert degenerate_note(zero_share(inputs, "m", "rpo", "density0.25")) == " [V_hat = r on 100% of prompts: target 0]"
    assert degenerate_note(zero_share(inputs, "m", "rpo", "default")) == ""  # no record: no mark
    assert degenerate_note(0.0) == ""
