"""Generation: seeded per batch, so a run killed mid-way and resumed writes what an uninterrupted run writes."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import BIN, MICRO, run_env, write_config

from rpo import config
from rpo.data import synthetic
from rpo.models import batching, build, generation


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    rows = synthetic.dataset(n_prompts=160, responses_per_prompt=1, seed=3)
    eval_table = pd.DataFrame(
        {
            "prompt_id": range(len(rows)),
            "prompt": [r["prompt"] for r in rows],
            "response": [r["response"] for r in rows],
        }
    )
    eval_table.to_parquet(root / "eval.parquet")
    texts = eval_table["prompt"].tolist() + eval_table["response"].tolist()
    for name, arch in (("llama", "causal"), ("t5", "seq2seq")):
        tokenizer = build.build_tokenizer(texts, 400)
        model = build.build_tiny_model(arch, tokenizer, MICRO["models"][name]["tiny"], seed=0)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    cfg = json.loads(json.dumps(MICRO))
    cfg["generate"] = {"max_new_tokens": 24, "batch_size": 4}
    return root, write_config(root / "c.yaml", cfg)


def _cmd(root, cfg_path, model, out):
    return [
        str(BIN / "rpo"),
        "generate",
        "--config",
        str(cfg_path),
        "--model",
        model,
        "--method",
        "rpo",
        "--seed",
        "1",
        "--model-dir",
        str(root / model),
        "--eval",
        str(root / "eval.parquet"),
        "--out",
        str(out),
    ]


# each architecture once and each way of starting a step once (the kill reaches a warm child through its client)
@pytest.mark.parametrize("model,warm", [("llama", False), ("t5", True)])
def test_generation_killed_and_resumed_equals_an_uninterrupted_run(setup, tmp_path, model, warm):
    """warm: the killed and the resumed runs go through the warm-start server, the uninterrupted one does not."""
    root, cfg_path = setup
    env = {**run_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight.jsonl"
    subprocess.run(_cmd(root, cfg_path, model, straight), env=env, check=True, capture_output=True)
    if warm and sys.platform.startswith("linux"):
        (tmp_path / "run").mkdir()
        env |= {"RPO_WARM": "1", "RPO_WARM_IDLE": "5", "XDG_RUNTIME_DIR": str(tmp_path / "run")}

    out = tmp_path / "killed.jsonl"
    partial = tmp_path / "killed.jsonl.partial"
    proc = subprocess.Popen(
        _cmd(root, cfg_path, model, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.exists() and len(partial.read_text().splitlines()) >= 9):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)  # a step that outlived its (warm) client would still be writing
    kept = len(partial.read_text().splitlines())
    time.sleep(1.5)
    assert not out.exists(), "the run finished before it could be killed"
    assert len(partial.read_text().splitlines()) == kept, "the killed run is still writing"
    assert 9 <= kept < 160
    with open(partial, "a") as sink:  # a line cut in half by the kill
        sink.write('{"prompt_id": 99, "gener')
    subprocess.run(_cmd(root, cfg_path, model, out), env=env, check=True, capture_output=True)
    assert out.read_text() == straight.read_text()
    assert not partial.exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == list(range(160))


def test_resume_keeps_whole_batches_and_regenerates_the_rest(tmp_path):
    calls = []

    def fake_generator(prompts, seed):  # deterministic in (prompt, seed), like a seeded sampler
        calls.append(seed)
        return [f"{p}-{seed}" for p in prompts]

    prompts = [f"p{i}" for i in range(7)]
    meta = [{"i": i} for i in range(7)]
    full = generation.generate_rows(fake_generator, prompts, meta, tmp_path / "a.partial", 2, seed=5)
    lines = (tmp_path / "a.partial").read_text().splitlines()
    # the fingerprint line, 1.5 batches and a cut line
    (tmp_path / "b.partial").write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])
    calls.clear()
    resumed = generation.generate_rows(fake_generator, prompts, meta, tmp_path / "b.partial", 2, seed=5)
    assert resumed == full
    assert calls == [generation.batch_seed(5, 0, i) for i in (1, 2, 3)]  # batch 0 kept, batch 1 redone


@pytest.mark.parametrize("other", ["prompts", "seed", "no header"])
def test_another_runs_resume_file_is_discarded_not_resumed(tmp_path, capfd, other):
    """A generations.jsonl.partial left by another run (other prompts, model, seed; or an old file without a
    fingerprint) would hand back its rows as this run's."""

    def fake_generator(prompts, seed):
        return [f"{p}-{seed}" for p in prompts]

    prompts, meta = [f"p{i}" for i in range(6)], [{"i": i} for i in range(6)]
    stale = tmp_path / "run.partial"
    other_prompts = [f"other{i}" for i in range(6)] if other == "prompts" else prompts
    generation.generate_rows(fake_generator, other_prompts, meta, stale, 2, seed=9 if other == "seed" else 5)
    if other == "no header":
        stale.write_text("\n".join(stale.read_text().splitlines()[1:]) + "\n")
        stale.write_text(stale.read_text().replace("-5", "-stale"))
    rows = generation.generate_rows(fake_generator, prompts, meta, stale, 2, seed=5)
    assert [r["generation"] for r in rows] == [f"p{i}-{generation.batch_seed(5, 0, i // 2)}" for i in range(6)]
    assert "left by another run" in capfd.readouterr().err


def test_conversations_render_with_and_without_a_chat_template():
    tokenizer = build.build_tokenizer(["hello there", "how are you"], 300)
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    assert batching.format_prompts(tokenizer, ["one", conversation], chat_template=False) == [
        "one",
        "hi\n\nhello\n\nagain",
    ]
    cfg = config.resolve({"name": "x", "methods": ["rpo"], "models": {"m": {"arch": "causal", "source": "tiny"}}})
    assert cfg["generate"]["backend"] == "transformers"


def test_samples_drawn_together_resume_by_whole_batches_of_prompts(tmp_path):
    """k samples per prompt come from one call per batch of prompts (num_return_sequences); a resumed run keeps the
    whole batches (prompts x k rows) and redraws from the first incomplete one."""
    calls = []

    def fake_generator(prompts, seed, n=1):
        calls.append((len(prompts), n, seed))
        return [f"{p}-{seed}-{j}" for p in prompts for j in range(n)]

    prompts = [f"p{i}" for i in range(5)]
    meta = [{"i": i, "sample": j} for i in range(5) for j in range(3)]
    full = generation.generate_rows(fake_generator, prompts, meta, tmp_path / "a.partial", 2, seed=5, per_prompt=3)
    assert [(r["i"], r["sample"]) for r in full] == [(i, j) for i in range(5) for j in range(3)]
    first = generation.batch_seed(5, 0, 0)
    assert [r["generation"] for r in full[:4]] == [f"p0-{first}-0", f"p0-{first}-1", f"p0-{first}-2", f"p1-{first}-0"]
    assert all(r["generation"].startswith(f"p{r['i']}-") and r["generation"].endswith(f"-{r['sample']}") for r in full)
    assert calls == [(2, 3, generation.batch_seed(5, 0, i)) for i in (0, 1)] + [(1, 3, generation.batch_seed(5, 0, 2))]
    lines = (tmp_path / "a.partial").read_text().splitlines()
    (tmp_path / "b.partial").write_text("\n".join(lines[:9]) + "\n")  # the header, one batch (6 rows) and 2 more
    calls.clear()
    resumed = generation.generate_rows(fake_generator, prompts, meta, tmp_path / "b.partial", 2, seed=5, per_prompt=3)
    assert resumed == full and [seed for *_, seed in calls] == [generation.batch_seed(5, 0, i) for i in (1, 2)]
    with pytest.raises(ValueError, match="metadata rows"):
        generation.generate_rows(fake_generator, prompts, meta[:-1], tmp_path / "c.partial", 2, seed=5, per_prompt=3)


@pytest.mark.parametrize("model", ["llama", "t5"])
def test_samples_drawn_together_are_each_prompts_own_and_reproducible(setup, model):
    """n sequences per prompt in one generate call: each row carries its own prompt's ids and the response ids it
    was drawn as; the same seed draws the same samples, and a prompt's samples are not all alike."""
    root, cfg_path = setup
    cfg = config.load(cfg_path)
    gcfg = generation.plain_sampling(cfg["generate"], 12)
    generator = generation.make_generator(cfg, model, root / model, gcfg)
    prompts = pd.read_parquet(root / "eval.parquet")["prompt"].tolist()[:3]
    rows = generator(prompts, seed=4, return_ids=True, n=5)
    assert len(rows) == 15 and rows == generator(prompts, seed=4, return_ids=True, n=5)
    arch = "causal" if model == "llama" else "seq2seq"
    alone = [generator([p], seed=4, return_ids=True)[0]["prompt_ids"] for p in prompts]
    for i, row in enumerate(rows):
        assert row["prompt_ids"] == alone[i // 5]
        text = generator.tokenizer.decode(row["response_ids"], skip_special_tokens=True).strip()
        assert text == row["generation"], arch
    assert len({r["generation"] for r in rows[:5]}) > 1
