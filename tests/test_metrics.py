import pytest

from rpo import metrics


def test_distinct_2_is_corpus_level():
    # bigrams: (a b) (b a) (a b) | (a b) (b c)  -> 3 unique of 5
    assert metrics.distinct_2(["a b a b", "A b c"]) == pytest.approx(3 / 5)
    assert metrics.distinct_2(["one"]) == 0.0


def test_average_length_in_words():
    assert metrics.avg_length(["one two three", "four"]) == 2.0


def test_rouge_l_by_hand():
    # LCS of "the cat sat" and "the cat was here" is "the cat": P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7
    assert metrics.rouge_l(["the cat sat"], ["the cat was here"])[0] == pytest.approx(4 / 7)
    assert metrics.rouge_l(["same words"], ["same words"])[0] == pytest.approx(1.0)
    assert metrics.rouge_l(["abc"], ["xyz"])[0] == 0.0
