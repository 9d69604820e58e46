"""Paired comparisons over seeds and prompts (rpo.report.paired) on cases with a known answer: the two-way bootstrap
covers the true mean where a t-interval across seed means does not (the prompt draw is shared by every seed), a
paired difference resolves what overlapping marginal intervals cannot, and the comparison table pairs seeds."""

import numpy as np
import pandas as pd
from scipy import stats

from rpo.report import paired

CFG = {
    "methods": ["sft", "rpo"],
    "ablations": {"default": {}, "beta5": {"methods": ["rpo"], "seeds": [0], "objective": {"beta": 5.0}}},
    "score": {"bootstrap": {"samples": 400, "confidence": 0.95, "seed": 0}},
}


def crossed(rng, mu, seeds, prompts, sd_seed, sd_prompt, sd_noise):
    """d[s, p] = mu + seed effect + prompt effect (shared by every seed) + noise."""
    return (
        mu
        + rng.normal(0, sd_seed, (seeds, 1))
        + rng.normal(0, sd_prompt, (1, prompts))
        + rng.normal(0, sd_noise, (seeds, prompts))
    )


def test_two_way_bootstrap_covers_the_mean_where_the_t_interval_over_seeds_does_not():
    rng = np.random.default_rng(0)
    mu, trials = 0.3, 150
    two_way = t_seeds = 0
    for trial in range(trials):
        d = crossed(rng, mu, 4, 40, sd_seed=0.05, sd_prompt=1.0, sd_noise=0.3)
        lo, hi = paired.two_way_ci(d, 400, 0.95, trial)
        two_way += lo <= mu <= hi
        means = d.mean(1)
        half = stats.t.ppf(0.975, 3) * means.std(ddof=1) / 2
        t_seeds += means.mean() - half <= mu <= means.mean() + half
    assert two_way / trials >= 0.88, two_way / trials
    assert t_seeds / trials <= 0.6, t_seeds / trials  # the prompt variance it leaves out


def test_a_constant_difference_has_a_point_interval_and_one_seed_is_the_prompt_bootstrap():
    assert paired.two_way_ci(np.full((3, 10), 0.25), 200, 0.95, 0) == (0.25, 0.25)
    values = np.random.default_rng(1).normal(size=(1, 30))
    seed_idx, prompt_idx = paired.resamples(1, 30, 500, 3)
    assert (seed_idx == 0).all()
    means = paired.resampled_means(values, seed_idx, prompt_idx)
    assert np.allclose(means, values[0][prompt_idx].mean(1))


def frame(rows):
    return pd.DataFrame(rows, columns=["prompt_id", "split", "value", "model", "method", "ablation", "seed"])


def test_paired_differences_resolve_what_overlapping_marginal_intervals_cannot():
    """RPO = SFT + 0.3 on every prompt and seed, on prompts whose rewards spread over 0..10: the marginal intervals
    overlap, the paired difference is exactly 0.3."""
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 10, 60)
    rows = []
    for seed in range(3):
        for p, value in enumerate(base + rng.normal(0, 0.2, 60)):
            rows.append((f"p{p}", "test", value, "m", "sft", "default", seed))
            rows.append((f"p{p}", "test", value + 0.3, "m", "rpo", "default", seed))
    for p, value in enumerate(base):
        rows.append((f"p{p}", "test", value - 0.1, "m", "reference", "default", 0))
        rows.append((f"p{p}", "test", value + 1.0, "m", "rpo", "beta5", 0))
    found = {(r["a"], r["b"]): r for r in paired.paired_rows(CFG, frame(rows), ["m"])}
    rpo_sft = found[(("rpo", "default"), ("sft", "default"))]
    assert rpo_sft["resolved"] and abs(rpo_sft["value"] - 0.3) < 1e-9
    assert rpo_sft["ci_low"] == rpo_sft["ci_high"] == rpo_sft["value"] or rpo_sft["ci_high"] - rpo_sft["ci_low"] < 1e-9
    sft = paired.matrices(frame(rows), "m", "test")[("sft", "default")][1]
    marginal = paired.two_way_ci(sft, 400, 0.95, 0)
    assert marginal[1] - marginal[0] > 1.0  # the marginal interval is wide: the paired one is what resolves
    assert rpo_sft["seeds"] == 3 and rpo_sft["prompts"] == 60
    # the one-seed reference is compared with every seed of the other side; the ablation with its own seed
    assert found[(("sft", "default"), ("reference", "default"))]["seeds"] == 3
    ablation = found[(("rpo", "beta5"), ("rpo", "default"))]
    assert ablation["seeds"] == 1 and ablation["value"] > 0.6
    assert (("rpo", "beta5"), ("reference", "default")) in found


def test_seeds_are_paired_by_their_number():
    a = ([0, 1, 2], np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    b = ([2, 0], np.array([[3.0, 3.0], [1.0, 1.0]]))
    seeds, diff = paired.difference(a, b)
    assert seeds == [0, 2] and np.allclose(diff, 0.0)


def test_each_ablated_method_is_compared_with_its_own_default_and_the_reference():
    cfg = {"methods": ["rpo", "qrpo"], "ablations": {"default": {}, "beta5": {}}}
    runs = {(m, a): None for m in ("reference", "rpo", "qrpo") for a in ("default",)}
    runs |= {("rpo", "beta5"): None, ("qrpo", "beta5"): None}
    pairs = paired.comparisons(cfg, runs)
    assert (("qrpo", "beta5"), ("qrpo", "default")) in pairs and (("qrpo", "beta5"), ("reference", "default")) in pairs
    assert (("rpo", "beta5"), ("rpo", "default")) in pairs
    assert (("qrpo", "beta5"), ("rpo", "default")) not in pairs  # another method's default is not its baseline
    assert (("qrpo", "default"), ("rpo", "default")) in pairs
