"""KL(pi_theta || pi_ref) along sampled responses: on a space small enough to enumerate (5 tokens, 3 new tokens at
most), the per-token estimator's mean equals the exact sequence KL within sampling error, it is never negative, and
its variance is far below the log-ratio estimator's."""

import itertools
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaConfig, T5Config

from rpo.models import batching, logprobs
from rpo.train import kl

PAD, EOS, BOS, VOCAB, MAX_NEW = 0, 1, 2, 5, 3
PROMPT_IDS = [3, 4, 3]


class WordTokenizer:
    """Words 'a'/'b' are tokens 3/4; enough of a tokenizer for encode_prompts and generation."""

    pad_token_id, eos_token_id, bos_token_id, chat_template = PAD, EOS, BOS, None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[3 if w == "a" else 4 for w in t.split()] for t in texts]}


def tiny(arch: str, seed: int, sharpness: float):
    torch.manual_seed(seed)
    ids = dict(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=EOS, tie_word_embeddings=False)
    if arch == "causal":
        config = LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=32,
            bos_token_id=BOS,
            **ids,
        )
        model = AutoModelForCausalLM.from_config(config)
    else:
        config = T5Config(
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            decoder_start_token_id=PAD,
            **ids,
        )
        model = AutoModelForSeq2SeqLM.from_config(config)
    with torch.no_grad():  # a random output layer away from uniform, so the KL is not tiny
        model.get_output_embeddings().weight.normal_(0.0, sharpness / config.hidden_size**0.5)
    return model.eval()


def every_response() -> list[list[int]]:
    """Every sequence sampling can produce: stopped by EOS, or cut at MAX_NEW tokens."""
    out = []
    for length in range(1, MAX_NEW + 1):
        for body in itertools.product(range(VOCAB), repeat=length - 1):
            if EOS not in body:
                out.append([*body, EOS])
                if length == MAX_NEW:
                    out += [[*body, t] for t in range(VOCAB) if t != EOS]
    return out


def exact_kl(policy, reference, arch: str) -> float:
    responses = every_response()
    batch = batching.batch_from_ids(WordTokenizer(), arch, [PROMPT_IDS] * len(responses), responses)
    with torch.no_grad():
        p = logprobs.score(policy, batch).sum_logp.double()
        q = logprobs.score(reference, batch).sum_logp.double()
    assert abs(p.exp().sum().item() - 1.0) < 1e-5, "the enumeration must cover every sequence"
    return (p.exp() * (p - q)).sum().item()


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_per_token_kl_is_unbiased_never_negative_and_less_noisy_than_the_log_ratio(arch):
    policy, reference = tiny(arch, 0, 1.5), tiny(arch, 1, 1.5)
    exact = exact_kl(policy, reference, arch)
    assert exact > 0.05
    prompts, tok = ["a b a"] * 4000, WordTokenizer()
    args = (policy, reference, tok, arch, prompts, 16, MAX_NEW)
    per_token = kl.estimate(*args, seed=3, estimator="per_token", batch_size=500)
    ratio = kl.estimate(*args, seed=3, estimator="log_ratio", batch_size=500)
    assert per_token["kl_samples"] == ratio["kl_samples"] == 4000
    for estimate in (per_token, ratio):
        standard_error = estimate["kl_std"] / math.sqrt(estimate["kl_samples"])
        assert abs(estimate["kl"] - exact) < 4 * standard_error + 1e-4, (estimate, exact)
    assert per_token["kl_std"] < 0.7 * ratio["kl_std"], (per_token, ratio)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_per_token_kl_of_each_response_is_never_negative_and_zero_against_itself(arch):
    policy, reference = tiny(arch, 0, 1.5), tiny(arch, 1, 1.5)
    batch = kl.sample_responses(policy, WordTokenizer(), arch, ["a b a"] * 200, 16, MAX_NEW, seed=0)
    with torch.no_grad():
        assert (kl.per_token_kl(policy, reference, batch) >= 0).all()
        assert (kl.log_ratio(policy, reference, batch) < 0).any()  # a single sample's log-ratio can be negative
        assert kl.per_token_kl(policy, policy, batch).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_the_policys_distributions_from_its_sampling_equal_a_forward_pass_over_the_samples(arch):
    """The KL estimate takes pi_theta's per-position distributions from the logits its sampling computed (no second
    forward pass): the same as scoring the sampled batch, position by position."""
    policy = tiny(arch, 0, 1.5)
    prompts = ["a b a", "b", "a a b b"] * 20
    batch, p = kl.sample_responses(policy, WordTokenizer(), arch, prompts, 16, MAX_NEW, seed=0, with_distributions=True)
    with torch.no_grad():
        scored = logprobs.token_distributions(policy, batch)
    assert p.shape == scored.shape and int(logprobs.scored_mask(batch).sum()) == len(p)
    assert torch.allclose(p, scored, atol=1e-5)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_kl_samples_from_the_policy_itself_whatever_generation_config_its_checkpoint_carries(arch):
    """A checkpoint whose generation_config sets a repetition penalty, n-gram blocking and a minimum length would
    draw responses from another distribution; the KL sampler decodes with a clean config, so its estimate still
    matches the exact KL, and the checkpoint's config is left as it was."""
    policy, reference = tiny(arch, 0, 1.5), tiny(arch, 1, 1.5)
    exact = exact_kl(policy, reference, arch)
    carried = policy.generation_config
    carried.repetition_penalty, carried.no_repeat_ngram_size, carried.min_new_tokens = 3.0, 1, 2
    estimate = kl.estimate(
        policy, reference, WordTokenizer(), arch, ["a b a"] * 4000, 16, MAX_NEW, seed=5, batch_size=500
    )
    standard_error = estimate["kl_std"] / math.sqrt(estimate["kl_samples"])
    assert abs(estimate["kl"] - exact) < 4 * standard_error + 1e-4, (estimate, exact)
    assert policy.generation_config is carried and carried.repetition_penalty == 3.0
