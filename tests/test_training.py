"""The training engine: response masks, cached reference = live reference, every objective learns on both
architectures, KL tracking, and kill-and-resume ending with the same weights as an uninterrupted run."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import BIN, MICRO, run_env, write_config
from safetensors.torch import load_file

from rpo import config
from rpo.cli import main
from rpo.errors import TrainingError
from rpo.models import batching, build, logprobs
from rpo.train import checkpoint, loop, objectives
from rpo.train.inputs import training_table
from rpo.train.step import Step

TEXTS = [
    "Write about cats. Use at most 8 words.",
    "Write about the sea, please.",
    "today cats purr.",
    "waves and salt.",
]
SPEC = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_only_response_tokens_are_scored_token_by_token(arch):
    tokenizer = build.build_tokenizer(TEXTS, 300)
    prompts, responses = TEXTS[:2], TEXTS[2:]
    batch = batching.encode(tokenizer, arch, prompts, responses, 64, 64)
    model = build.build_tiny_model(arch, tokenizer, SPEC)
    scores = logprobs.score(model, batch)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        expected = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if arch == "causal":
            targets = batch.input_ids[i, 1:]  # position t scores token t+1
            prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            assert scores.mask[i, : prompt_len - 1].sum() == 0  # no prompt token is scored
        else:
            targets = batch.labels[i]
            assert batch.input_ids[i, : batch.attention_mask[i].sum()].tolist() == (
                tokenizer(prompt, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            )
        scored = targets[scores.mask[i].bool()].tolist()
        assert scored == expected, (arch, i)
        assert (scores.token_logps[i][~scores.mask[i].bool()] == 0).all()  # padding contributes nothing
        assert (scores.token_logps[i][scores.mask[i].bool()] < 0).all()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Micro data, both tiny reference models and their cached log-probs (KL pairs included)."""

    root = tmp_path_factory.mktemp("engine")
    old = os.getcwd()
    os.chdir(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg_path = write_config(root / "micro.yaml", MICRO)
    assert main(["prepare-data", "--config", str(cfg_path), "--out-dir", "data"]) == 0
    for model in MICRO["models"]:
        assert (
            main(
                [
                    "init-model",
                    "--config",
                    str(cfg_path),
                    "--model",
                    model,
                    "--train",
                    "data/train.parquet",
                    "--out-dir",
                    f"{model}/ref",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "ref-logprobs",
                    "--config",
                    str(cfg_path),
                    "--model",
                    model,
                    "--model-dir",
                    f"{model}/ref",
                    "--train",
                    "data/train.parquet",
                    "--out",
                    f"{model}/ref.parquet",
                ]
            )
            == 0
        )
    os.chdir(old)
    return root, config.resolve(MICRO), cfg_path


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_cached_reference_equals_a_live_reference_forward(prepared, model_name):
    root, cfg, _ = prepared
    table = training_table(cfg, objectives.get("kto"), root / "data/train.parquet", root / f"{model_name}/ref.parquet")
    model, tokenizer = build.load(root / f"{model_name}/ref", cfg["models"][model_name]["arch"])
    model.train()
    build.disable_dropout(model)  # as the trainer does
    part = table.iloc[:8]
    # the trainer's own batches: the table tokenised and padded once, a batch an index into it
    step = Step(cfg, cfg["models"][model_name], objectives.get("kto"), model, tokenizer, None, table=part)
    rows = torch.arange(8)
    with torch.no_grad():
        live = logprobs.sequence_logprobs(model, step.pairs.batch(rows))[0]
        live_kl = logprobs.sequence_logprobs(model, step.kl_pairs_table.batch(rows))[0]
    assert torch.allclose(live.double(), torch.tensor(part["ref_logp"].to_numpy()), atol=1e-4)
    assert torch.allclose(live_kl.double(), torch.tensor(part["ref_kl_logp"].to_numpy()), atol=1e-4)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_a_batch_of_the_padded_table_is_the_batch_of_its_rows_alone(arch):
    """The trainer pads the whole table once and indexes it: each batch must be exactly what padding its rows alone
    gives (no column of another row's padding left, nothing of a row cut)."""
    prompts = [TEXTS[i % len(TEXTS)] * (1 + i % 3) for i in range(7)]
    responses = [TEXTS[(i + 1) % len(TEXTS)] * (1 + (i * 2) % 5) for i in range(7)]
    tokenizer = build.build_tokenizer(prompts + responses, 300)
    ids = batching.tokenize(tokenizer, prompts, responses, 40, 12)
    table = batching.PaddedTable(tokenizer, arch, ids)
    for rows in ([0], [3, 1], [6, 2, 4], list(range(7))):
        got = table.batch(torch.tensor(rows))
        alone = batching.batch_from_ids(
            tokenizer, arch, [ids.prompt_ids[r] for r in rows], [ids.response_ids[r] for r in rows]
        )
        for name in ("input_ids", "attention_mask", "response_mask", "labels"):
            a, b = getattr(got, name), getattr(alone, name)
            assert (a is None and b is None) or torch.equal(a, b), (rows, name)
    assert ids.response_cut and max(ids.response_cut) > 0  # some responses were cut to 12 tokens


def test_length_grouped_epochs_cover_every_row_once_with_less_padding():
    lengths = torch.randint(5, 60, (403,), generator=torch.Generator().manual_seed(0))
    plain = loop.epoch_order(403, seed=3, epoch=1)
    grouped = loop.epoch_order(403, seed=3, epoch=1, lengths=lengths, batch=8)
    assert sorted(grouped.tolist()) == list(range(403))
    assert torch.equal(grouped, loop.epoch_order(403, seed=3, epoch=1, lengths=lengths, batch=8))  # resumable
    assert not torch.equal(grouped, loop.epoch_order(403, seed=3, epoch=2, lengths=lengths, batch=8))

    def padding(order):  # padded minus real tokens over the whole batches
        return sum(int(len(b) * lengths[b].max() - lengths[b].sum()) for b in order[:400].split(8))

    assert padding(grouped) < 0.5 * padding(plain)


@pytest.mark.parametrize("model_name", ["llama", "t5"])
@pytest.mark.parametrize("method", ["sft", "rpo", "dro", "kto", "qrpo"])
def test_every_objective_learns_on_both_architectures(prepared, model_name, method):
    root, cfg, _ = prepared
    objective = objectives.get(method)
    table = training_table(cfg, objective, root / "data/train.parquet", root / f"{model_name}/ref.parquet")
    torch.manual_seed(0)
    model, tokenizer = build.load(root / f"{model_name}/ref", cfg["models"][model_name]["arch"])
    model.train()
    build.disable_dropout(model)
    from rpo.models import value

    value_net = value.build(cfg, model) if objective.needs_value_model else None
    step = Step(cfg, cfg["models"][model_name], objective, model, tokenizer, value_net, table=table)
    params = list(model.parameters()) + (list(value_net.parameters()) if value_net else [])
    optimizer = torch.optim.Adam(params, lr=5e-4)
    losses = []
    for _ in range(40):  # fit one fixed batch
        loss, _, _ = step(torch.arange(8))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses  # measured: SFT 0.78-0.85x, the others below 0.01x


def test_qrpo_reads_reference_rewards_and_names_the_file_missing_a_prompt(prepared, tmp_path):
    root, cfg, _ = prepared
    train = pd.read_parquet(root / "data/train.parquet")
    pool = train[["prompt_id"]].assign(reward=train["reward"].to_numpy() + 0.5)  # shifted: other quantiles
    pool.to_parquet(tmp_path / "good.parquet")
    table = training_table(
        cfg,
        objectives.get("qrpo"),
        root / "data/train.parquet",
        root / "llama/ref.parquet",
        None,
        tmp_path / "good.parquet",
    )
    assert len(table) == len(train) and ((table["quantile"] >= 0) & (table["quantile"] <= 1)).all()
    own = training_table(cfg, objectives.get("qrpo"), root / "data/train.parquet", root / "llama/ref.parquet")
    assert not np.allclose(own["quantile"], table["quantile"])  # the file, not the prompt's own completions
    first = train["prompt_id"].iloc[0]
    pool[pool["prompt_id"] != first].to_parquet(tmp_path / "short.parquet")
    with pytest.raises(ValueError, match=r"short\.parquet: QRPO: 1 training prompts have no reference rewards"):
        training_table(
            cfg,
            objectives.get("qrpo"),
            root / "data/train.parquet",
            root / "llama/ref.parquet",
            None,
            tmp_path / "short.parquet",
        )


def _train_cmd(root, cfg_path, model, out, extra=()):
    return [
        str(BIN / "rpo"),
        "train",
        "--config",
        str(cfg_path),
        "--model",
        model,
        "--method",
        "rpo",
        "--seed",
        "0",
        "--init",
        f"{model}/ref",
        "--train",
        "data/train.parquet",
        "--ref",
        f"{model}/ref.parquet",
        "--eval",
        "data/eval.parquet",
        "--out-dir",
        out,
        *extra,
    ]


@pytest.mark.parametrize("model_name", ["llama", "t5"])
def test_killed_training_resumes_to_the_same_weights(prepared, tmp_path, model_name):
    root, cfg, _ = prepared
    micro = json.loads(json.dumps(cfg))
    micro["train"].update(epochs=6, checkpoint_every=1, kl_every=3)
    cfg_path = write_config(tmp_path / "c.yaml", micro)
    env = {**run_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}

    subprocess.run(
        _train_cmd(root, cfg_path, model_name, str(tmp_path / "straight")),
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(root, cfg_path, model_name, str(killed)),
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoint" / "progress.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train.json").exists(), "the run finished before it could be killed"
    step = json.loads((killed / "checkpoint" / "progress.json").read_text())["step"]
    assert step >= 1

    out = subprocess.run(
        _train_cmd(root, cfg_path, model_name, str(killed)), cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from" in out.stdout

    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight, resumed = (json.loads((d / "train.json").read_text()) for d in (tmp_path / "straight", killed))
    assert straight["final_loss"] == resumed["final_loss"] and straight["steps"] == resumed["steps"]
    assert straight["mlflow_run_id"] != resumed["mlflow_run_id"]
    kl_a, kl_b = pd.read_csv(tmp_path / "straight" / "kl.csv"), pd.read_csv(killed / "kl.csv")
    assert kl_a["step"].tolist() == kl_b["step"].tolist() and kl_a["kl"].tolist() == pytest.approx(kl_b["kl"].tolist())
    assert not (killed / "checkpoint").exists()  # cleaned up once the run is complete


def _kill_after_two_checkpoints(root, cfg_path, model, out, env):
    """Start a training run; kill it once the newest checkpoint and the one before it (.old) both exist."""
    proc = subprocess.Popen(
        _train_cmd(root, cfg_path, model, str(out)),
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    newest, older = out / "checkpoint" / "progress.json", out / "checkpoint.old" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (newest.exists() and older.exists()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "train.json").exists(), "the run finished before it could be killed"
    assert newest.exists() and older.exists()


def _same_weights(dir_a, dir_b) -> bool:
    a, b = (load_file(d / "model" / "model.safetensors") for d in (dir_a, dir_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_edited_config_or_a_damaged_checkpoint_never_changes_the_result(prepared, tmp_path):
    """Kill, edit the config, rerun: equal to an uninterrupted run of the new config (the stale checkpoint is not
    resumed). Kill, truncate the newest checkpoint, rerun: it resumes from the one before, equal to an uninterrupted
    run."""
    root, cfg, _ = prepared
    env = {**run_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}
    old = json.loads(json.dumps(cfg))
    old["train"].update(epochs=6, checkpoint_every=1, kl_every=0)
    new = json.loads(json.dumps(old))
    new["train"]["lr"], new["objective"]["beta"] = 3e-3, 0.5
    paths = {"old": write_config(tmp_path / "old.yaml", old), "new": write_config(tmp_path / "new.yaml", new)}
    for name, path in paths.items():
        subprocess.run(_train_cmd(root, path, "llama", str(tmp_path / name)), cwd=root, env=env, check=True)

    damaged = tmp_path / "damaged"
    _kill_after_two_checkpoints(root, paths["old"], "llama", damaged, env)
    state = damaged / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    out = subprocess.run(
        _train_cmd(root, paths["old"], "llama", str(damaged)), cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "not used: unreadable state.pt" in out.stdout and "resuming from" in out.stdout
    assert _same_weights(tmp_path / "old", damaged)

    edited = tmp_path / "edited"
    _kill_after_two_checkpoints(root, paths["old"], "llama", edited, env)
    out = subprocess.run(
        _train_cmd(root, paths["new"], "llama", str(edited)), cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "another config" in out.stdout and "resuming from" not in out.stdout
    assert _same_weights(tmp_path / "new", edited) and not _same_weights(tmp_path / "old", edited)


def test_a_crafted_checkpoint_is_never_unpickled(tmp_path):
    """state.pt is loaded with weights_only=True: a pickle that would run code on load is refused, not run."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"modules": Payload(), "optimizer": {}, "scheduler": {}, "rng": {}}, folder / "state.pt")
    (folder / "progress.json").write_text(json.dumps({"step": 3, "fingerprint": "run"}))
    said = []
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert checkpoint.resume(folder, "run", {"model": model}, optimizer, scheduler, say=said.append) is None
    assert not marker.exists()
    assert "unreadable state.pt" in said[0] and not folder.exists()


def test_a_non_finite_loss_stops_training_before_any_model_is_written(prepared, tmp_path, monkeypatch):
    root, cfg, _ = prepared
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    exploding = json.loads(json.dumps(cfg))
    exploding["train"].update(lr=1e30, warmup_steps=0, kl_every=0, max_grad_norm=1e30)
    cell = {"model": "llama", "method": "rpo", "ablation": "default", "seed": 0}
    with pytest.raises(TrainingError, match=r"step \d+: .*not finite"):
        loop.train(exploding, cell, "llama/ref", "data/train.parquet", "llama/ref.parquet", tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "train.json").exists()


def test_kl_starts_at_zero_and_moves_with_training(prepared, tmp_path, monkeypatch):
    root, cfg, _ = prepared
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    micro = json.loads(json.dumps(cfg))
    micro["train"].update(epochs=3, kl_every=2, kl_prompts=4, lr=3e-3)
    summary = loop.train(
        micro,
        {"model": "llama", "method": "sft", "ablation": "default", "seed": 0},
        "llama/ref",
        "data/train.parquet",
        "llama/ref.parquet",
        tmp_path / "run",
        eval_path="data/eval.parquet",
    )
    curve = pd.read_csv(tmp_path / "run" / "kl.csv")
    assert curve["step"].iloc[0] == 0 and curve["kl"].iloc[0] == pytest.approx(0, abs=1e-5)
    assert curve["step"].iloc[-1] == summary["steps"] and curve["kl"].iloc[-1] > 0.01
    assert summary["peak_memory_mb"] > 0 and summary["tokens_per_s"] > 0
    written = json.loads((tmp_path / "run" / "train.json").read_text())["truncation"]
    assert written["rows"] == summary["rows"] > 0  # every row it trained on (SFT: each prompt's best)
    assert written["share_cut"] == pytest.approx(written["rows_cut"] / written["rows"])
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        logged = dict(con.execute("select key, value from metrics where key like 'truncation_%'").fetchall())
    assert logged["truncation_rows_cut"] == written["rows_cut"]


def _loss_curve(db, out_dir):
    run_id = json.loads((out_dir / "train.json").read_text())["mlflow_run_id"]
    with sqlite3.connect(db) as con:
        return [
            v
            for (v,) in con.execute(
                "select value from metrics where run_uuid = ? and key = 'loss' order by step", (run_id,)
            )
        ]


@pytest.mark.parametrize("method", ["rpo", "sft"])
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(prepared, tmp_path, method):
    # Two real ranks on CPU (gloo): `--cpu --num_processes 2` would silently run one process.
    root, cfg, cfg_path = prepared
    if method == "sft":  # every completion, so that SFT runs as many steps as the others
        cfg_path = write_config(tmp_path / "sft_all.yaml", {**MICRO, "objective": {"sft": {"best_only": False}}})
    env = {**run_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}
    args = [
        "train",
        "--config",
        str(cfg_path),
        "--model",
        "llama",
        "--method",
        method,
        "--init",
        "llama/ref",
        "--train",
        "data/train.parquet",
        "--ref",
        "llama/ref.parquet",
    ]
    one = subprocess.run(
        [str(BIN / "rpo"), *args, "--out-dir", str(tmp_path / "one")], cwd=root, env=env, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-2000:]
    launch = [
        str(BIN / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(BIN / "rpo"),
    ]
    two = subprocess.run(
        [*launch, *args, "--out-dir", str(tmp_path / "two")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    curve_one, curve_two = (
        _loss_curve(tmp_path / "mlflow.db", tmp_path / "one"),
        _loss_curve(tmp_path / "mlflow.db", tmp_path / "two"),
    )
    assert len(curve_one) == len(curve_two) >= 5
    assert curve_two == pytest.approx(curve_one, abs=1e-5)
    assert curve_one[0] != pytest.approx(curve_one[-1], abs=1e-3)  # it trained
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        assert sorted(v for (v,) in con.execute("select value from tags where key = 'processes'")) == ["1", "2"]


def test_lora_trains_adapters_and_saves_plain_weights(prepared, tmp_path, monkeypatch):
    root, cfg, _ = prepared
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    micro = json.loads(json.dumps(cfg))
    micro["train"].update(lora={"r": 4}, gradient_checkpointing=True, lr=1e-2, kl_every=0)
    summary = loop.train(
        micro,
        {"model": "llama", "method": "rpo", "ablation": "default", "seed": 0},
        "llama/ref",
        "data/train.parquet",
        "llama/ref.parquet",
        tmp_path / "run",
    )
    base = load_file(root / "llama" / "ref" / "model.safetensors")
    tuned = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert tuned.keys() == base.keys()  # merged: loads with AutoModelForCausalLM like any other run
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert changed and all("proj" in k for k in changed)  # only adapted linear layers moved
    assert summary["final_loss"] is not None


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_chat_template_wraps_prompts_only_when_asked_and_available(arch):
    tokenizer = build.build_tokenizer(TEXTS, 300)
    plain = batching.encode(tokenizer, arch, TEXTS[:2], TEXTS[2:], 64, 64, chat_template=True)  # none to apply
    assert torch.equal(plain.input_ids, batching.encode(tokenizer, arch, TEXTS[:2], TEXTS[2:], 64, 64).input_ids)

    tokenizer.chat_template = (
        "{% for m in messages %}<user> {{ m['content'] }}{% endfor %}{% if add_generation_prompt %} <bot>{% endif %}"
    )
    wrapped = batching.encode(tokenizer, arch, TEXTS[:2], TEXTS[2:], 64, 64, chat_template=True)
    assert tokenizer.decode(wrapped.input_ids[0][wrapped.attention_mask[0].bool()]).startswith(
        "<user> " + TEXTS[0] + " <bot>"
    )
    assert wrapped.response_mask.sum() == plain.response_mask.sum()  # responses are scored the same
    ids, _ = batching.encode_prompts(tokenizer, arch, TEXTS[:1], 64, chat_template=True)
    assert "<bot>" in tokenizer.decode(ids[0])


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_chunked_logprobs_equal_the_full_logits_path_in_value_and_gradient(chunk_size):
    tokenizer = build.build_tokenizer(TEXTS, 300)
    torch.manual_seed(0)
    model = build.build_tiny_model("causal", tokenizer, {**SPEC, "num_layers": 2}).double()
    batch = batching.encode(tokenizer, "causal", TEXTS[:2], TEXTS[2:], 64, 64)

    def run(size):
        model.zero_grad()
        scores = logprobs.score(model, batch, chunk_size=size)
        (scores.sum_logp * torch.tensor([1.0, -2.0], dtype=torch.float64)).sum().backward()
        return scores.token_logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    full_logps, full_grads = run(0)
    chunk_logps, chunk_grads = run(chunk_size)
    assert torch.allclose(full_logps, chunk_logps, atol=1e-10)
    assert all(torch.allclose(full_grads[n], chunk_grads[n], atol=1e-10) for n in full_grads)
    assert any(g.abs().max() > 0 for g in chunk_grads.values())
