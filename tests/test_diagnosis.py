"""The diagnosis (rpo.evaluate.diagnose): on a prompt whose responses can be enumerated (5 tokens, 3 new tokens at
most), the self-normalised estimate of KL(pi* || pi_theta) from reference samples, scored on their token ids,
matches the exact value for both architectures; pi_theta = pi_ref gives KL(pi* || pi_ref); and the fits say
slope 1, R^2 1 for a policy that is pi* itself."""

import numpy as np
import pytest
import torch
from test_kl import PROMPT_IDS, WordTokenizer, every_response, tiny

from rpo.evaluate import diagnose
from rpo.models import batching, logprobs
from rpo.reference.logprobs import score_sampled
from rpo.report import optimum

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
