"""The KL-regularised optimum estimated from reference samples: on a prompt with K enumerable responses the
self-normalised importance estimate converges to the closed form, with the finite-N bias the docs describe; and a
policy's share of the optimal gain is computed on the scale beta acts on."""

import math

import numpy as np
import pandas as pd

from rpo.report import optimum

P_REF = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
REWARD = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])  # standardised, the scale beta acts on
RAW = 3.0 * REWARD + 5.0


def exact(beta: float) -> tuple[float, float]:
    star = P_REF * np.exp(REWARD / beta)
    star /= star.sum()
    return float((star * RAW).sum()), float((star * np.log(star / P_REF)).sum())


def estimate(beta: float, n: int, prompts: int = 400, seed: int = 0) -> tuple[float, float]:
    idx = np.random.default_rng(seed).choice(len(P_REF), size=(prompts, n), p=P_REF)
    best, kl = optimum.snis(REWARD[idx], RAW[idx], beta)
    assert (kl >= 0).all()
    return float(best.mean()), float(kl.mean())


def test_the_importance_estimate_converges_to_the_closed_form_optimum():
    for beta in (0.3, 1.0, 3.0):
        true_reward, true_kl = exact(beta)
        reward, kl = estimate(beta, 4000, prompts=50)
        assert abs(reward - true_reward) < 0.03 and abs(kl - true_kl) < 0.01, (beta, reward, true_reward, kl, true_kl)


def test_with_few_samples_the_optimum_is_underestimated_more_for_small_beta():
    """The finite-N bias: too few samples miss the best, rare responses; sharper weights (small beta) suffer most."""
    gaps = {}
    for beta in (0.3, 3.0):
        true_reward, true_kl = exact(beta)
        reward4, kl4 = estimate(beta, 4)
        reward64, _ = estimate(beta, 64)
        assert reward4 < reward64 < true_reward + 0.02 and kl4 < true_kl
        gaps[beta] = true_reward - reward4
    assert gaps[0.3] > gaps[3.0] > 0


def test_convergence_reports_every_power_of_two_up_to_n():
    idx = np.random.default_rng(1).choice(len(P_REF), size=(30, 64), p=P_REF)
    rows = optimum.convergence(REWARD[idx], RAW[idx], 0.5)
    assert [n for n, _, _ in rows] == [1, 2, 4, 8, 16, 32, 64]
    assert rows[0][2] == 0.0  # one sample: pi* is that sample, no divergence
    assert abs(rows[-1][1] - exact(0.5)[0]) < abs(rows[0][1] - exact(0.5)[0])


def test_sample_matrix_orders_samples_by_prompt():
    samples = pd.DataFrame(
        {
            "model": ["m"] * 4 + ["x"],
            "prompt_id": ["b", "a", "b", "a", "a"],
            "sample": [1, 0, 0, 1, 0],
            "reward": [4.0, 1.0, 3.0, 2.0, 9.0],
            "reward_raw": [40.0, 10.0, 30.0, 20.0, 90.0],
        }
    )
    prompts, rewards, raw = optimum.sample_matrix(samples, "m")
    assert prompts == ["a", "b"] and rewards.tolist() == [[1.0, 2.0], [3.0, 4.0]] and raw[1, 1] == 40.0
    assert math.isclose(optimum.snis(rewards, raw, 1e6)[0][0], 15.0, rel_tol=1e-4)  # beta -> inf: pi* = pi_ref


def test_the_estimated_kl_never_exceeds_log_n_and_the_trust_rule_stops_the_curve_before_it_does():
    """At small beta the true KL is far above log N: the estimate flattens just below log N (the weights of N
    samples can say no more) and the rule marks it untrusted; at beta 1 the estimate is trusted and right."""
    n = 16
    idx = np.random.default_rng(3).choice(len(P_REF), size=(400, n), p=P_REF)
    rewards = np.column_stack([REWARD[idx], np.full(400, 40.0)])  # one far better sample per prompt
    raw = 3.0 * rewards + 5.0
    _, kl_sharp = optimum.snis(rewards, raw, 0.01)
    assert (kl_sharp <= math.log(n + 1) + 1e-9).all() and kl_sharp.mean() > 0.95 * math.log(n + 1)
    assert not optimum.trusted(kl_sharp.mean(), n + 1)
    _, kl = estimate(1.0, 64)
    assert optimum.trusted(kl, 64) and abs(kl - exact(1.0)[1]) < 0.05  # within its finite-N bias
    # the rule is the weights' perplexity: KL = log N - H(w) <= log N / 2  <=>  exp(H(w)) >= sqrt(N)
    assert optimum.trusted(0.5 * math.log(64), 64) and not optimum.trusted(0.5 * math.log(64) + 1e-6, 64)


def test_effective_sample_size_is_n_for_flat_weights_and_one_for_a_single_winner():
    flat = np.zeros((2, 8))
    assert np.allclose(optimum.effective_sample_size(flat, 1.0), 8.0)
    winner = np.zeros((1, 8))
    winner[0, 3] = 100.0
    assert np.allclose(optimum.effective_sample_size(winner, 1.0), 1.0)


def test_kl_matched_regret_interpolates_along_the_curve_from_the_reference():
    curve_kl, curve_reward = np.array([0.5, 0.1, 1.0]), np.array([6.0, 5.0, 6.5])  # any order of betas
    assert optimum.optimum_at_kl(curve_kl, curve_reward, 4.0, 0.0) == 4.0  # KL 0: the reference
    assert math.isclose(optimum.optimum_at_kl(curve_kl, curve_reward, 4.0, 0.05), 4.5)  # between (0, 4) and (0.1, 5)
    assert math.isclose(optimum.optimum_at_kl(curve_kl, curve_reward, 4.0, 0.75), 6.25)
    assert optimum.optimum_at_kl(curve_kl, curve_reward, 4.0, 1.0) == 6.5
    assert math.isnan(optimum.optimum_at_kl(curve_kl, curve_reward, 4.0, 1.01))  # past the trusted curve: no value


def test_the_quantile_optimum_estimate_converges_to_its_closed_form():
    """QRPO's target pi*_q = pi_ref exp(q / beta) / Z, q the reward's share of the reference at or below it: the
    estimate (each sample's quantile among its prompt's N samples, then the same importance weights) converges."""
    cdf = np.array([P_REF[REWARD <= r].sum() for r in REWARD])
    idx = np.random.default_rng(1).choice(len(P_REF), size=(30, 3000), p=P_REF)
    quantiles = optimum.within_prompt_quantiles(REWARD[idx])
    assert np.allclose(quantiles, cdf[idx], atol=0.03)
    for beta in (0.2, 1.0):
        star = P_REF * np.exp(cdf / beta)
        star /= star.sum()
        reward, kl = optimum.snis(quantiles, RAW[idx], beta)
        assert abs(reward.mean() - (star * RAW).sum()) < 0.05
        assert abs(kl.mean() - (star * np.log(star / P_REF)).sum()) < 0.01


def test_best_of_n_matches_its_closed_form_and_its_kl_bound_holds():
    order = np.argsort(REWARD)
    cdf = np.cumsum(P_REF[order])
    idx = np.random.default_rng(2).choice(len(P_REF), size=(400, 64), p=P_REF)
    for n in (4, 16):
        chosen = cdf**n - np.concatenate([[0.0], cdf[:-1]]) ** n  # P(best of n is the k-th worst response)
        estimate = optimum.best_of_n(RAW[idx], n)
        assert estimate.shape == (400,) and abs(estimate.mean() - (chosen * RAW[order]).sum()) < 0.05
        exact_kl = (chosen * np.log(chosen / P_REF[order])).sum()
        assert exact_kl <= optimum.best_of_n_kl_bound(n) and optimum.best_of_n_kl_bound(n) - exact_kl < 1.0
    assert optimum.best_of_n(RAW[idx][:, :3], 4) is None  # fewer samples than n: no estimate
    assert math.isclose(optimum.best_of_n_kl_bound(4), math.log(4) - 0.75)


def test_landmarks_pair_sft_with_best_of_n_and_qrpos_regret_with_rpos_on_the_same_resamples():
    cfg = {"score": {"bootstrap": {"samples": 300, "confidence": 0.95, "seed": 0}}}
    rng = np.random.default_rng(0)
    best = rng.normal(5.0, 1.0, size=40)  # per prompt
    sft = best[None, :] - 0.5 + rng.normal(0, 0.05, size=(3, 40))  # 0.5 below best-of-4 on every prompt
    regret_b = rng.normal(1.0, 0.3, size=300)
    policies = [
        dict(method="sft", ablation="default", seeds=3, values=sft, regret=1.0, regret_b=regret_b),
        dict(method="rpo", ablation="default", seeds=3, values=sft, regret=1.2, regret_b=regret_b + 0.2),
        dict(method="qrpo", ablation="default", seeds=3, values=sft, regret=1.0, regret_b=regret_b),
    ]
    found = {(m["a"], m["b"]): m for m in optimum.landmarks(cfg, policies, {4: dict(per_prompt=best)})}
    sft_gap = found[("sft", "best-of-4")]
    assert math.isclose(sft_gap["value"], -0.5, abs_tol=0.02) and sft_gap["ci"][1] < 0
    # the resamples are shared, so a constant difference in regret has a point interval
    qrpo = found[("qrpo", "rpo")]
    assert math.isclose(qrpo["value"], -0.2) and np.allclose(qrpo["ci"], (-0.2, -0.2))
    policies[1]["regret_b"] = np.full(300, math.nan)  # RPO past the trusted curve: no regret to compare
    assert ("qrpo", "rpo") not in {(m["a"], m["b"]) for m in optimum.landmarks(cfg, policies, {})}
