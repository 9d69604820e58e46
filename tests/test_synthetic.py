from rpo.data import synthetic

PROMPT = (
    "Write about cats. Include the word 'purr'. Do not use the word 'tail'. Use at most 8 words. "
    "Start with the word 'today'. Use only lowercase letters."
)


def test_constraints_parse_back_from_the_prompt():
    assert synthetic.constraints(PROMPT) == {
        "topic": "cats",
        "include": "purr",
        "avoid": "tail",
        "max_words": 8,
        "first_word": "today",
        "lowercase": True,
    }


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


def test_bullet_and_politeness_constraints():
    prompt = (
        "Write about cats. Include the word 'purr'. Use at most 10 words. "
        "Write exactly 2 bullet items, each starting with '- '. Do not use insulting words."
    )
    assert synthetic.constraints(prompt) | {} == {
        "topic": "cats",
        "include": "purr",
        "max_words": 10,
        "bullets": 2,
        "polite": True,
    }
    assert synthetic.reward(prompt, "- cats purr\n- soft paws") == 10.0
    assert synthetic.constraint_checks(prompt, "- cats purr soft paws")["bullets"] is False
    # an insult breaks the politeness constraint and is penalised on top
    assert synthetic.reward(prompt, "- cats purr\n- stupid paws") == 10.0 * 3 / 4 - synthetic.INSULT_PENALTY


def test_a_perfectly_skilled_demonstration_meets_every_constraint():
    import random

    rng = random.Random(0)
    for _ in range(50):
        prompt = synthetic.make_prompt(rng)
        response = synthetic.sample_response(prompt, rng, skill=1.0)
        assert synthetic.reward(prompt, response) == 10.0, prompt
        assert all(line.strip() != "-" for line in response.splitlines())  # no empty bullet
