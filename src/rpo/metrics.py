"""Automatic metrics, each defined exactly (see config/README.md)."""
from __future__ import annotations


def words(text: str) -> list[str]:
    return text.lower().split()


def rouge_l(generations: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure per pair (rouge-score, Porter stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, gen)["rougeL"].fmeasure for gen, ref in zip(generations, references)]


def distinct_2(generations: list[str]) -> float:
    """Corpus-level Distinct-2: unique bigrams over all bigrams of all generations (lower-cased words)."""
    bigrams = [tuple(pair) for text in generations for pair in zip(words(text), words(text)[1:])]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def avg_length(generations: list[str]) -> float:
    """Mean length in whitespace-separated words."""
    return sum(len(words(t)) for t in generations) / len(generations) if generations else 0.0
