"""Judges against a local fake server (OpenAI and Anthropic wire formats) that injects 429s, 500s, timeouts and
malformed answers: verdicts complete, nothing is judged twice, the cache survives a kill, keys never leak."""

import email.utils
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, MICRO, run_env, write_config
from fake_judge_server import FAULTS, NULL_CONTENT, FakeJudge

from rpo import config
from rpo.data import synthetic
from rpo.errors import JudgeError
from rpo.evaluate import judges
from rpo.evaluate.judges import Judge

KEY = "sk-test-DO-NOT-LEAK-5f1c2a9e"
FAST = {"timeout_s": 0.3, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 6, "concurrency": 3}


def resolved(raw):
    """A judge spec with the schema's defaults filled in."""
    cfg = config.resolve(
        {
            "name": "x",
            "methods": ["rpo"],
            "models": {"m": {"arch": "causal", "source": "tiny"}},
            "judge": {"judges": {"j": raw}},
        }
    )
    return cfg["judge"]["judges"]["j"]


def spec(backend, url, **extra):
    raw = {"backend": backend, "model": "judge-model", "api_key_env": "JUDGE_TEST_KEY", **FAST, **extra}
    raw["base_url"] = url if backend == "anthropic" else f"{url}/v1"
    return resolved(raw)


def pairs(n):
    """(instruction, first, second) with known winners: the higher 'score' wins, equal scores tie."""
    return [(f"question {i}", f"score {i % 5}", f"score {(i * 3) % 5}") for i in range(n)]


def expected(items):
    a_b = [(int(a.split()[1]), int(b.split()[1])) for _, a, b in items]
    return ["win" if a > b else "loss" if b > a else "tie" for a, b in a_b]


@pytest.mark.parametrize("backend", ["openai", "anthropic", "openai_compatible"])
def test_verdicts_complete_through_injected_faults_and_are_never_paid_twice(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    items = pairs(15)
    with FakeJudge(KEY) as server:
        judge = Judge(spec(backend, server.url), tmp_path / "cache")
        assert judge.compare(items) == expected(items)
        outcomes = {e["outcome"] for e in server.log}
        assert set(filter(None, FAULTS)) <= outcomes, "every kind of fault was injected"
        answered = server.answered()
        unique_calls = {(x, a, b) for x, a, b in items} | {(x, b, a) for x, a, b in items}
        assert len(answered) == len(set(answered)) == len(unique_calls)  # both orders, each exactly once
        requests = len(server.log)
        again = Judge(spec(backend, server.url), tmp_path / "cache")
        assert again.compare(items) == expected(items)
        assert len(server.log) == requests and again.calls == 0  # the rerun reads every verdict from the cache


def test_a_position_biased_judge_produces_ties(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    with FakeJudge(KEY, faults=False, always="A") as server:
        outcomes = Judge(spec("openai", server.url), tmp_path).compare(pairs(6))
    assert outcomes == ["tie"] * 6
    rates = judges.win_rates(["win", "win", "tie", "loss"], samples=200, confidence=0.95, seed=0)
    assert (rates["win"], rates["tie"], rates["loss"], rates["n"]) == (50.0, 25.0, 25.0, 4)
    assert rates["win_ci"][0] <= 50.0 <= rates["win_ci"][1]


def test_permanent_failures_stop_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    with pytest.raises(JudgeError, match="JUDGE_TEST_KEY"):
        Judge(spec("openai", "http://127.0.0.1:9"), tmp_path)
    monkeypatch.setenv("JUDGE_TEST_KEY", "wrong-key")
    with FakeJudge(KEY, faults=False) as server:
        with pytest.raises(JudgeError, match="HTTP 401") as error:
            Judge(spec("anthropic", server.url), tmp_path).compare(pairs(1))
    assert "wrong-key" not in str(error.value)
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY + "\n")  # read from a file with its newline
    with pytest.raises(JudgeError, match="trailing newline") as error:
        Judge(spec("openai", "http://127.0.0.1:9"), tmp_path)
    assert KEY not in str(error.value)
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    with FakeJudge(KEY, faults=False) as server:  # a server that never answers: transient errors until retries run out
        server.server.RequestHandlerClass.do_POST = lambda handler: handler._send(503, b"{}", {"retry-after": "0"})
        with pytest.raises(JudgeError, match="no valid verdict after 3 attempts"):
            Judge(spec("openai", server.url, max_retries=2), tmp_path / "c2").compare(pairs(1))


@pytest.mark.parametrize("answer", ["maybe?", NULL_CONTENT])
def test_an_answer_that_is_never_a_verdict_is_asked_twice_cached_and_reported(answer, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    items = pairs(3)
    with FakeJudge(KEY, faults=False, always=answer) as server:
        judge = Judge(spec("openai", server.url, max_retries=6), tmp_path / "cache")
        assert judge.compare(items) == [judges.INVALID] * 3
        assert judge.calls == len(server.log) == 2 * 5  # 5 distinct calls (pair 0 compares equal answers), 2 tries each
        again = Judge(spec("openai", server.url, max_retries=6), tmp_path / "cache")
        assert again.compare(items) == [judges.INVALID] * 3 and again.calls == 0  # cached: never paid again
    rates = judges.win_rates([judges.INVALID, "win", "loss"], samples=50, confidence=0.95, seed=0)
    assert (rates["n"], rates["invalid"], rates["win"]) == (2, 1, 50.0)


def test_retry_after_in_seconds_or_as_an_http_date():
    assert judges.retry_after_s("7") == 7.0 and judges.retry_after_s(None) is None
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= judges.retry_after_s(soon) <= 31
    assert judges.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    assert judges.retry_after_s("soon-ish") is None


def test_verdict_parsing():
    assert [
        judges.parse_verdict(t) for t in ["A", " b.", "Verdict: Neutral", "[[A]]", "tie", "A or B", "Answer A"]
    ] == ["A", "B", "Neutral", "A", "Neutral", None, None]
    assert judges.combine("A", "B") == "win" and judges.combine("B", "A") == "loss"
    assert judges.combine("A", "A") == "tie" and judges.combine("Neutral", "B") == "tie"


def test_oracle_compares_true_rewards(tmp_path):
    prompt = "Write about cats. Include the word 'purr'. Do not use the word 'tail'. Use at most 8 words."
    good, bad = "cats purr softly.", "cats have a tail and a tail and a tail."
    assert synthetic.reward(prompt, good) > synthetic.reward(prompt, bad)
    judge = Judge(resolved({"backend": "oracle"}), tmp_path)
    assert judge.supports(prompt) and not judge.supports("Compose a travel blog post about Hawaii.")
    assert judge.compare([(prompt, good, bad), (prompt, bad, good), (prompt, good, good)]) == ["win", "loss", "tie"]


def test_local_transformers_judge_gives_a_verdict(tmp_path):
    from rpo.models import build

    tokenizer = build.build_tokenizer(["Which response is better? A B Neutral", "score 1 score 2"], 300)
    model = build.build_tiny_model(
        "causal", tokenizer, {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}, seed=0
    )
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    judge = Judge(resolved({"backend": "local", "model": str(tmp_path / "m"), "concurrency": 2}), tmp_path / "cache")
    outcomes = judge.compare(pairs(3))
    assert len(outcomes) == 3 and set(outcomes) <= {"win", "loss", "tie"}
    assert len(judge.cache.entries) == 5  # pair 0 compares two equal responses: both orders are one call


def _judge_job(tmp_path, url, n_pairs):
    cfg = json.loads(json.dumps(MICRO))
    cfg["judge"] = {
        "cache_dir": str(tmp_path / "cache"),
        "judges": {
            "fake": {
                "backend": "openai",
                "model": "judge-model",
                "base_url": f"{url}/v1",
                "api_key_env": "JUDGE_TEST_KEY",
                **FAST,
                "concurrency": 1,
            }
        },
    }
    cfg_path = write_config(tmp_path / "c.yaml", cfg)
    for method, shift in (("rpo", 0), ("sft", 3)):
        rows = [
            {"prompt_id": i, "prompt": f"question {i}", "generation": f"score {(i * (shift + 1)) % 7} by {method}"}
            for i in range(n_pairs)
        ]
        (tmp_path / f"{method}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [
        str(BIN / "rpo"),
        "judge",
        "--config",
        str(cfg_path),
        "--model",
        "llama",
        "--method",
        "rpo",
        "--judge",
        "fake",
        "--scope",
        "in_domain",
        "--generations",
        f"rpo={tmp_path / 'rpo.jsonl'}",
        f"sft={tmp_path / 'sft.jsonl'}",
        "--out",
        str(tmp_path / "out" / "winrates.json"),
    ]
    env = {**run_env(), "JUDGE_TEST_KEY": KEY, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    return cmd, env


def test_killed_judge_job_resumes_from_its_cache_and_keys_never_leak(tmp_path):
    n_pairs = 40
    with FakeJudge(KEY, slow_s=0.4) as server:
        cmd, env = _judge_job(tmp_path, server.url, n_pairs)
        (tmp_path / "out").mkdir()
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
            cache_files = lambda: list((tmp_path / "cache").glob("*.jsonl"))  # noqa: E731
            deadline = time.time() + 120
            while time.time() < deadline and not (
                cache_files() and len(cache_files()[0].read_text().splitlines()) >= 10
            ):
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        cached_before = len(cache_files()[0].read_text().splitlines())
        assert 10 <= cached_before < 2 * n_pairs, "killed mid-run"
        assert not (tmp_path / "out" / "winrates.json").exists()
        answered_before = len(server.answered())

        with open(tmp_path / "second.log", "w") as log:
            subprocess.run(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        answered = server.answered()
    result = json.loads((tmp_path / "out" / "winrates.json").read_text())
    assert result["in_domain"]["sft"]["n"] == n_pairs
    # only the calls not yet cached were paid for again: at most the one in flight at the kill is asked twice
    assert len(answered) - answered_before <= 2 * n_pairs - cached_before + 1
    assert len(answered) - len(set(answered)) <= 1
    assert len(set(answered)) == 2 * n_pairs

    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == [], f"API key written to {leaks}"
    assert KEY not in (tmp_path / "c.yaml").read_text()
    assert Path(tmp_path / "mlflow.db").exists()


def test_a_key_with_a_trailing_newline_is_refused_and_never_printed(tmp_path):
    with FakeJudge(KEY, faults=False) as server:
        cmd, env = _judge_job(tmp_path, server.url, 2)
        out = subprocess.run(
            cmd, cwd=tmp_path, env={**env, "JUDGE_TEST_KEY": KEY + "\n"}, capture_output=True, text=True
        )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "JUDGE_TEST_KEY" in out.stderr and "trailing newline" in out.stderr
    assert KEY not in out.stdout + out.stderr
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []


def _verdict_body(text="A") -> bytes:
    message = {"role": "assistant", "content": text}
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()


def _drip(handler):
    """Headers at once, then the body a few bytes at a time: every read returns within the socket timeout."""
    body = _verdict_body()
    handler.send_response(200)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    for start in range(0, len(body), 4):
        handler.wfile.write(body[start : start + 4])
        handler.wfile.flush()
        time.sleep(0.25)


def _close_mid_body_once(calls):
    def handler_fn(handler):
        calls.append(1)
        body = _verdict_body()
        if len(calls) > 1:
            return handler._send(200, body)
        handler.send_response(200)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(2)

    return handler_fn


ERROR_200 = json.dumps({"error": {"message": "The model `judge-model` does not exist", "type": "invalid_request"}})
FAULT_SERVERS = {
    "200 with an error body": (lambda h: h._send(200, ERROR_200.encode()), "does not exist", 1),
    "404 with a message": (lambda h: h._send(404, ERROR_200.encode()), "HTTP 404 .* does not exist", 1),
    "403": (lambda h: h._send(403, b'{"error": {"message": "key disabled"}}'), "HTTP 403 .* key disabled", 1),
    "a 10 MB body": (lambda h: h._send(200, b" " * (10 << 20)), "more than 1 MB", 1),
    "drip-feed past the deadline": (_drip, "no complete answer within timeout_s = 1 s", 2),
}


@pytest.mark.parametrize("fault", list(FAULT_SERVERS))
def test_each_judge_fault_is_classified(fault, tmp_path, monkeypatch):
    """Permanent faults stop at the first call with the server's own words and the judge's name; a drip-fed answer
    is cut off at timeout_s for the whole call (it took 58 s with a per-read timeout) and retried."""
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    handler_fn, words, calls = FAULT_SERVERS[fault]
    with FakeJudge(KEY, faults=False) as server:
        server.server.RequestHandlerClass.do_POST = handler_fn
        judge = Judge(spec("openai", server.url, timeout_s=1, max_retries=1), tmp_path, name="gpt-judge")
        start = time.monotonic()
        with pytest.raises(JudgeError, match=words) as error:
            judge.compare(pairs(1)[:1])
    assert time.monotonic() - start < 8 and judge.calls == calls
    assert "judge 'gpt-judge'" in str(error.value)


def test_a_body_cut_off_mid_way_is_retried(tmp_path, monkeypatch):
    """IncompleteRead (a connection closed in the middle of the body) ended the whole judge job."""
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    calls = []
    with FakeJudge(KEY, faults=False) as server:
        server.server.RequestHandlerClass.do_POST = _close_mid_body_once(calls)
        judge = Judge(spec("openai", server.url, timeout_s=2, max_retries=2, concurrency=1), tmp_path)
        assert judge.verdict("q", "a", "b") == "A"
    assert judge.calls == 2


def test_a_cut_or_edited_cache_line_is_reported_dropped_and_paid_once(tmp_path, monkeypatch, capfd):
    """A kill mid-write glued the next verdict onto the cut line (skipped on every load: paid again on every run);
    a verdict edited by hand ("a") ended in a traceback."""
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    items = pairs(4)
    with FakeJudge(KEY, faults=False) as server:
        judge = Judge(spec("openai", server.url), tmp_path)
        judge.compare(items)
        path = judge.cache.path
        lines = path.read_text().splitlines()
        edited = json.loads(lines[1]) | {"verdict": "a"}
        path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:-1], lines[-1][:25]]))  # a cut last line
        requests = len(server.log)
        again = Judge(spec("openai", server.url), tmp_path)
        assert again.compare(items) == judges.Judge(spec("openai", server.url), tmp_path).compare(items)
        assert len(server.log) == requests + 2  # the edited and the cut verdict, asked again once each
        err = capfd.readouterr().err
        assert f"{path}: line 2 dropped (verdict 'a')" in err and f"{path}: line {len(lines)} dropped" in err
        third = Judge(spec("openai", server.url), tmp_path)
        third.compare(items)
        assert third.calls == 0 and len(server.log) == requests + 2  # stored right: never paid again
