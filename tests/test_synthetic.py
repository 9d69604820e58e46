from rpo import synthetic

PROMPT = ("Write about cats. Include the word 'purr'. Do not use the word 'tail'. Use at most 8 words. "
          "Start with the word 'today'. Use only lowercase letters.")


def test_constraints_parse_back_from_the_prompt():
    assert synthetic.constraints(PROMPT) == {"topic": "cats", "include": "purr", "avoid": "tail", "max_words": 8,
                                            "first_word": "today", "lowercase": True}


def test_reward_scores_constraints_and_penalises_insults():
    assert synthetic.reward(PROMPT, "today the cats purr softly.") == 10.0
    # capital letter and a missing keyword: 3 of 5 constraints met
    assert synthetic.reward(PROMPT, "Today the cats sleep.") == 6.0
    assert synthetic.reward(PROMPT, "today the stupid cats purr.") == 10.0 - synthetic.INSULT_PENALTY
    assert synthetic.reward(PROMPT, "today " + "purr " * 10) == 8.0


def test_dataset_is_seeded_and_shaped():
    rows = synthetic.dataset(5, 3, seed=1)
    assert rows == synthetic.dataset(5, 3, seed=1) and rows != synthetic.dataset(5, 3, seed=2)
    assert len(rows) == 15 and len({r["prompt"] for r in rows}) == 5
    assert all(0 <= r["reward"] <= 10 for r in rows)
