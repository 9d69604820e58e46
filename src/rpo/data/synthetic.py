"""A small synthetic instruction-following world whose true reward is known.

Prompts ask for a short text on a topic under verifiable constraints; `reward(prompt, response)`
parses the constraints back out of the prompt text and scores any response on UltraFeedback's
0-10 scale: 10 x the share of constraints met, minus a penalty per insulting word.
"""
from __future__ import annotations

import random
import re

TOPICS = {
    "the sea": ["waves", "salt", "tide", "boats", "shore", "blue", "wind"],
    "coffee": ["beans", "cup", "morning", "bitter", "warm", "roast", "milk"],
    "gardens": ["flowers", "soil", "seeds", "green", "rain", "roots", "sun"],
    "trains": ["tracks", "station", "ticket", "fast", "journey", "steam", "seats"],
    "winter": ["snow", "cold", "ice", "fire", "quiet", "white", "coats"],
    "music": ["songs", "rhythm", "piano", "voice", "dance", "notes", "loud"],
    "cats": ["paws", "purr", "soft", "sleep", "whiskers", "tail", "curious"],
    "mountains": ["peaks", "climb", "stone", "high", "paths", "clouds", "view"],
    "cities": ["streets", "lights", "crowds", "towers", "busy", "noise", "parks"],
    "books": ["pages", "stories", "read", "words", "library", "quiet", "ink"],
}
FILLER = ["the", "a", "is", "and", "with", "of", "in", "we", "love", "see", "every", "day", "very", "many", "our"]
INSULTS = ["idiot", "stupid", "moron", "dumb"]
FIRST_WORDS = ["today", "often", "sometimes", "yes"]
END_PHRASES = ["the end", "that is all", "thank you"]
INSULT_PENALTY = 3.0

_WORD = re.compile(r"[a-z']+")


def make_prompt(rng: random.Random) -> str:
    topic = rng.choice(list(TOPICS))
    words = TOPICS[topic]
    keyword, avoid = rng.sample(words, 2)
    parts = [f"Write about {topic}.", f"Include the word '{keyword}'.", f"Do not use the word '{avoid}'."]
    parts.append(f"Use at most {rng.choice([8, 10, 12, 15])} words.")
    if rng.random() < 0.5:
        parts.append(f"Start with the word '{rng.choice(FIRST_WORDS)}'.")
    if rng.random() < 0.5:
        parts.append(f"End with '{rng.choice(END_PHRASES)}'.")
    if rng.random() < 0.5:
        parts.append("Use only lowercase letters.")
    if rng.random() < 0.3:
        parts.append(f"Write exactly {rng.choice([2, 3])} bullet items, each starting with '- '.")
    if rng.random() < 0.5:
        parts.append("Do not use insulting words.")
    return " ".join(parts)


def constraints(prompt: str) -> dict:
    """Parse the verifiable constraints back out of a prompt's text."""
    out = {}
    if m := re.search(r"Write about ([a-z ]+)\.", prompt):
        out["topic"] = m.group(1)
    if m := re.search(r"Include the word '([a-z]+)'", prompt):
        out["include"] = m.group(1)
    if m := re.search(r"Do not use the word '([a-z]+)'", prompt):
        out["avoid"] = m.group(1)
    if m := re.search(r"Use at most (\d+) words", prompt):
        out["max_words"] = int(m.group(1))
    if m := re.search(r"Start with the word '([a-z]+)'", prompt):
        out["first_word"] = m.group(1)
    if m := re.search(r"End with '([a-z ]+)'", prompt):
        out["end_phrase"] = m.group(1)
    if "Use only lowercase letters" in prompt:
        out["lowercase"] = True
    if m := re.search(r"Write exactly (\d+) bullet items", prompt):
        out["bullets"] = int(m.group(1))
    if "Do not use insulting words" in prompt:
        out["polite"] = True
    return out


def constraint_checks(prompt: str, response: str) -> dict[str, bool]:
    """Which of the prompt's constraints the response meets."""
    spec = constraints(prompt)
    words = _WORD.findall(response.lower())
    checks = {}
    if "include" in spec:
        checks["include"] = spec["include"] in words
    if "avoid" in spec:
        checks["avoid"] = spec["avoid"] not in words
    if "max_words" in spec:
        checks["max_words"] = 0 < len(words) <= spec["max_words"]
    if "first_word" in spec:
        checks["first_word"] = bool(words) and words[0] == spec["first_word"]
    if "end_phrase" in spec:
        checks["end_phrase"] = response.lower().rstrip(" .!").endswith(spec["end_phrase"])
    if spec.get("lowercase"):
        checks["lowercase"] = response == response.lower()
    if "bullets" in spec:
        checks["bullets"] = sum(line.startswith("- ") for line in response.splitlines()) == spec["bullets"]
    if spec.get("polite"):
        checks["polite"] = not any(w in INSULTS for w in words)
    return checks


def constraint_accuracy(prompt: str, response: str) -> float:
    """Share of the prompt's constraints the response meets."""
    checks = constraint_checks(prompt, response)
    return sum(checks.values()) / max(len(checks), 1)


def reward(prompt: str, response: str) -> float:
    """True reward on a 0-10 scale."""
    score = 10.0 * constraint_accuracy(prompt, response)
    insults = sum(w in INSULTS for w in _WORD.findall(response.lower()))
    return max(0.0, score - INSULT_PENALTY * insults)


def sample_response(prompt: str, rng: random.Random, skill: float) -> str:
    """A response that meets each constraint with probability `skill` (noisy demonstrations)."""
    spec = constraints(prompt)
    topic_words = TOPICS.get(spec.get("topic", ""), FILLER)
    keep = lambda: rng.random() < skill  # noqa: E731
    budget = spec.get("max_words", 12)
    n_words = rng.randint(max(3, budget - 5), budget) if keep() else budget + rng.randint(1, 6)
    tail = spec["end_phrase"].split() if "end_phrase" in spec and keep() else []
    # distinct slots: a first word, the keyword, one word per bullet, then the final phrase (never split)
    n_words = max(n_words, len(tail) + 2, len(tail) + spec.get("bullets", 0))
    body = n_words - len(tail)
    pool = [w for w in topic_words + FILLER if w != spec.get("avoid")]
    words = [rng.choice(pool) for _ in range(body)] + tail
    if "include" in spec and keep():
        words[rng.randrange(1, body)] = spec["include"]
    if "avoid" in spec and not keep():
        words[rng.randrange(body)] = spec["avoid"]
    if rng.random() > skill and rng.random() < 0.5:
        words[rng.randrange(body)] = rng.choice(INSULTS)
    if "first_word" in spec and keep():
        words[0] = spec["first_word"]
    if "polite" in spec and not keep():
        words[rng.randrange(body)] = rng.choice(INSULTS)
    if not (spec.get("lowercase") and keep()):
        words[0] = words[0].capitalize()
    if "bullets" in spec:
        n = spec["bullets"] if keep() else rng.choice([1, spec["bullets"] + 1])
        last_cut = body if tail else body - 1  # the final phrase may be a bullet of its own; no bullet is empty
        n = min(n, last_cut + 1)
        cuts = sorted(rng.sample(range(1, last_cut + 1), n - 1)) if n > 1 else []
        chunks = [words[a:b] for a, b in zip([0, *cuts], [*cuts, len(words)])]
        return "\n".join("- " + " ".join(chunk) for chunk in chunks)
    return " ".join(words) + "."


def dataset(n_prompts: int, responses_per_prompt: int, seed: int) -> list[dict]:
    """(prompt, response, reward) rows, several distinct responses of mixed quality per prompt."""
    rng = random.Random(seed)
    rows = []
    seen = set()
    while len(seen) < n_prompts:
        prompt = make_prompt(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        responses = set()
        for _ in range(100 * responses_per_prompt):  # distinct responses: duplicates are rejected as bad rows
            if len(responses) == responses_per_prompt:
                break
            response = sample_response(prompt, rng, skill=rng.uniform(0.3, 1.0))
            if response not in responses:
                responses.add(response)
                rows.append({"prompt": prompt, "response": response, "reward": reward(prompt, response)})
    return rows
