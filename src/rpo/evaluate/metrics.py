"""Automatic metrics, each defined exactly (docs/metrics.md), with percentile-bootstrap confidence intervals.

The metric libraries are imported where they are used: each costs seconds to import on 2 cores (rouge-score
with nltk ~2 s, bert-score ~4 s, alt-profanity-check ~2 s, torch ~1.6 s), and a step such as `score-ood`
needs none of them.
"""

from __future__ import annotations

import functools

import numpy as np


def words(text: str) -> list[str]:
    return text.lower().split()


def rouge_l(generations: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure per pair (rouge-score, Porter stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, gen)["rougeL"].fmeasure for gen, ref in zip(generations, references)]


def distinct_2(generations: list[str]) -> float:
    """Corpus-level Distinct-2: unique bigrams over all bigrams of all generations (lower-cased words)."""
    bigrams = [pair for text in generations for pair in zip(words(text), words(text)[1:])]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def distinct_2_of_groups(groups: list[list[str]]):
    """A function (group indices -> Distinct-2 of all generations of those groups, each group once): the value
    distinct_2 gives on them, with each text split into bigrams once instead of once per call (the bootstrap)."""
    ids: dict = {}
    bigrams = [
        [ids.setdefault(pair, len(ids)) for text in texts for pair in zip(words(text), words(text)[1:])]
        for texts in groups
    ]
    unique, counts = [frozenset(b) for b in bigrams], [len(b) for b in bigrams]

    def statistic(indices) -> float:
        chosen = set(int(i) for i in indices)
        total = sum(counts[i] for i in chosen)
        return len(frozenset().union(*(unique[i] for i in chosen))) / total if total else 0.0

    return statistic


def lengths(generations: list[str]) -> list[int]:
    """Length in whitespace-separated words."""
    return [len(words(t)) for t in generations]


def avg_length(generations: list[str]) -> float:
    return float(np.mean(lengths(generations))) if generations else 0.0


@functools.cache
def _bert_scorer(model: str, num_layers: int, batch_size: int, device: str):
    from bert_score import BERTScorer

    return BERTScorer(model_type=model, num_layers=num_layers, batch_size=batch_size, device=device)


def bertscore_f1(
    generations: list[str],
    references: list[str],
    model: str,
    num_layers: int,
    batch_size: int = 32,
    device: str | None = None,
) -> list[float]:
    """BERTScore F1 per pair: greedy cosine matching of contextual token embeddings, no IDF, no baseline rescaling.
    A pair with an empty side scores 0 (nothing matches; bert-score itself fails on empty text)."""
    import torch

    scores = [0.0] * len(generations)
    keep = [i for i, (g, r) in enumerate(zip(generations, references)) if g.strip() and r.strip()]
    if keep:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        scorer = _bert_scorer(model, num_layers, batch_size, device)
        _, _, f1 = scorer.score([generations[i] for i in keep], [references[i] for i in keep])
        for i, value in zip(keep, f1.tolist()):
            scores[i] = value
    return scores


def toxicity(
    generations: list[str],
    backend: str = "profanity_check",
    model: str | None = None,
    toxic_label: str = "hate",
    batch_size: int = 32,
) -> list[float]:
    """Probability that each generation is toxic, from `alt-profanity-check` or a Hugging Face classifier."""
    if backend == "profanity_check":
        from profanity_check import predict_prob

        return predict_prob(list(generations)).astype(float).tolist() if generations else []
    from transformers import pipeline

    classify = pipeline("text-classification", model=model, top_k=None, truncation=True)
    out = []
    for scores in classify(list(generations), batch_size=batch_size):
        by_label = {s["label"].lower(): s["score"] for s in scores}
        if toxic_label.lower() not in by_label:
            raise ValueError(
                f"config key 'score.toxicity.toxic_label': '{toxic_label}' is not a label of {model} "
                f"(labels: {sorted(by_label)})"
            )
        out.append(float(by_label[toxic_label.lower()]))
    return out


def bootstrap_ci(
    statistic, n_items: int, samples: int, confidence: float, seed: int, point: float | None = None
) -> tuple[float, float]:
    """Percentile bootstrap: resample item indices with replacement, recompute `statistic(indices)` each time.
    Given the statistic's `point` estimate, the interval is shifted by the resamples' bias (their mean minus the
    point): for statistics whose resamples are biased, as Distinct-2's are (see docs/metrics.md)."""
    if n_items == 0 or samples == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n_items, n_items)) for _ in range(samples)]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    bias = float(np.mean(values)) - point if point is not None else 0.0
    return float(lo) - bias, float(hi) - bias


def mean_ci(values, samples: int, confidence: float, seed: int) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0 or samples == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)
