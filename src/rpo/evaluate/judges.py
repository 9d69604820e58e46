"""Pairwise LLM-as-judge: (instruction, A, B) -> A | B | Neutral, every pair judged in both orders.

Backends: OpenAI chat completions (gpt-4o), Anthropic messages (claude-3-5-sonnet), any OpenAI-compatible
server, a local transformers model (scores the three answers by log-probability), and an oracle that compares
the synthetic world's known rewards. Every verdict is cached on disk, keyed by (judge, prompt, both responses);
transient failures (429, 5xx, timeouts, malformed answers) are retried with exponential backoff. API keys are
read from the environment at call time and never written anywhere.
"""

from __future__ import annotations

import email.utils
import fcntl
import hashlib
import http.client
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from rpo import io, tracking
from rpo.data import synthetic
from rpo.data.prepare import split_of
from rpo.errors import DataError, JudgeError
from rpo.evaluate.metrics import mean_ci
from rpo.io import read_jsonl
from rpo.redact import redact

PROMPT_VERSION = "pairwise-v1"
JUDGE_PROMPT = """You are comparing two responses to the same instruction.

[Instruction]
{instruction}

[Response A]
{a}

[Response B]
{b}

Which response follows the instruction better: more helpful, correct, relevant and harmless? \
Do not let the order of the responses or their length decide. \
Answer with exactly one word: A, B, or Neutral (if they are equally good)."""
VERDICTS = ("A", "B", "Neutral")
INVALID = "invalid"  # a judge that answered twice without a verdict: cached, counted and shown, never paid again
MALFORMED_ATTEMPTS = 2  # the same prompt answered without a verdict twice will not answer with one on a third try
DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_VERDICT = re.compile(r"^\W*(?:verdict\W*)?(a|b|neutral|tie)\W*$", re.IGNORECASE)


class TransientError(Exception):
    """Worth retrying: rate limit, server error, timeout, malformed answer."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_verdict(text) -> str | None:
    """'A', 'B' or 'Neutral' from a judge's answer; None when the answer is not one of them (or no text at all)."""
    if not isinstance(text, str):
        return None
    match = _VERDICT.match(text.strip())
    if not match:
        return None
    word = match.group(1).lower()
    return {"a": "A", "b": "B"}.get(word, "Neutral")


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header in seconds: a number of seconds or an HTTP date (RFC 9110); None when unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when.tzinfo else None


# ----------------------------------------------------------------------------- backends


class HTTPJudge:
    """OpenAI chat-completions or Anthropic messages wire format over plain HTTPS."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.wire = "anthropic" if spec["backend"] == "anthropic" else "openai"
        self.base_url = (spec["base_url"] or DEFAULT_URLS.get(spec["backend"], "")).rstrip("/")
        if not self.base_url:
            raise JudgeError(f"judge backend '{spec['backend']}' needs base_url (the server's /v1 address)")
        self.key_env = spec["api_key_env"] or DEFAULT_KEY_ENV.get(spec["backend"])
        if self.key_env and not os.environ.get(self.key_env):
            raise JudgeError(
                f"judge backend '{spec['backend']}': set the API key in the environment variable {self.key_env}"
            )
        key = self._key()
        if key and (key != key.strip() or not key.isprintable()):
            raise JudgeError(
                f"judge backend '{spec['backend']}': the API key in {self.key_env} has surrounding whitespace or a "
                "control character (a trailing newline from a file?); strip it"
            )

    def _key(self) -> str:
        return os.environ.get(self.key_env, "") if self.key_env else ""

    def scrub(self, text: str) -> str:
        """The text with the API key (and its stripped form) and any password or token in a URL replaced: for any
        message that reaches a log."""
        for secret in {self._key(), self._key().strip()} - {""}:
            text = text.replace(secret, "***")
        return redact(text)

    def _request(self, prompt: str) -> urllib.request.Request:
        key = self._key()
        message = [{"role": "user", "content": prompt}]
        body = {
            "model": self.spec["model"],
            "messages": message,
            "max_tokens": self.spec["max_tokens"],
            "temperature": self.spec["temperature"],
        }
        headers = {"content-type": "application/json"}
        if self.wire == "anthropic":
            url = f"{self.base_url}/v1/messages"
            headers |= {"x-api-key": key, "anthropic-version": "2023-06-01"}
        else:
            url = f"{self.base_url}/chat/completions"
            if key:
                headers["authorization"] = f"Bearer {key}"
        return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")

    def _text(self, payload: dict) -> str:
        if self.wire == "anthropic":
            return "".join(part.get("text", "") for part in payload["content"] if part.get("type") == "text")
        return payload["choices"][0]["message"]["content"]

    def ask(self, prompt: str) -> str:
        """One call, bounded as a whole by timeout_s (connect, headers and the whole body: a server that drips its
        answer a few bytes at a time is cut off). Transient faults raise TransientError; permanent ones (a refused
        request, an error object in the body) JudgeError with the server's own message."""
        deadline = time.monotonic() + self.spec["timeout_s"]
        try:
            with urllib.request.urlopen(self._request(prompt), timeout=self.spec["timeout_s"]) as response:
                raw = _read_body(response, deadline, self.spec["timeout_s"])
        except urllib.error.HTTPError as exc:
            message = _server_message(exc)
            if exc.code == 429 or exc.code >= 500:
                retry_after = exc.headers.get("retry-after") if exc.headers else None
                raise TransientError(f"HTTP {exc.code}{message}", retry_after_s(retry_after)) from None
            raise JudgeError(
                self.scrub(f"judge request refused: HTTP {exc.code} from {self.base_url}{message}")
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
            # connection refused or reset, a body cut off mid-way (IncompleteRead), a server that went silent
            raise TransientError(self.scrub(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")) from None
        except (JudgeError, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. http.client's ValueError quoting a header: may hold the key
            raise JudgeError(self.scrub(f"judge request failed: {type(exc).__name__}: {exc}")) from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise TransientError("response body is not JSON") from None
        if isinstance(payload, dict) and payload.get("error"):  # an API error sent with HTTP 200
            raise JudgeError(self.scrub(f"the server answered with an error: {_error_text(payload['error'])}"))
        try:
            return self._text(payload)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TransientError(f"malformed response body ({type(exc).__name__})") from None


MAX_BODY_BYTES = 1 << 20  # one verdict's answer is a few hundred bytes


def _read_body(response, deadline: float, timeout_s: float) -> bytes:
    chunks, size = [], 0
    while chunk := response.read1(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise JudgeError(f"the server sent more than {MAX_BODY_BYTES >> 20} MB for one verdict: not a chat API?")
        if time.monotonic() > deadline:
            raise TransientError(f"no complete answer within timeout_s = {timeout_s:g} s")
    return b"".join(chunks)


def _error_text(error) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:300]
    return str(error)[:300]


def _server_message(exc: urllib.error.HTTPError) -> str:
    """The server's own explanation of a refused request (an API's `error.message`), when it sent one."""
    try:
        body = exc.read(4096)
        payload = json.loads(body)
        text = _error_text(payload.get("error", payload)) if isinstance(payload, dict) else str(payload)[:300]
    except Exception:  # noqa: BLE001 - no body, or not JSON: the status says enough
        return ""
    return f": {text}"


class LocalJudge:
    """A local transformers causal LM: the verdict is whichever of A, B, Neutral it finds most likely next."""

    def __init__(self, spec: dict):
        # Lazy: API and oracle judges never need torch/transformers (~2.5 s to import on 2 cores).
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        self.model = AutoModelForCausalLM.from_pretrained(spec["model"]).eval()
        self.lock = threading.Lock()

    def ask(self, prompt: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        else:
            prompt += "\nAnswer:"
        context = tok(prompt, add_special_tokens=False)["input_ids"]
        scores = {}
        with self.lock, self.torch.no_grad():
            for verdict in VERDICTS:
                answer = tok(
                    " " + verdict if not getattr(tok, "chat_template", None) else verdict, add_special_tokens=False
                )["input_ids"]
                ids = self.torch.tensor([context + answer])
                logp = self.model(ids).logits[0, len(context) - 1 : -1].log_softmax(-1)
                scores[verdict] = logp.gather(-1, ids[0, len(context) :, None]).sum().item()
        return max(scores, key=scores.get)


class OracleJudge:
    """Compares the synthetic world's true rewards: the better-rewarded response wins, equal rewards tie."""

    def __init__(self, spec: dict):
        pass

    def supports(self, instruction: str) -> bool:
        return bool(synthetic.constraints(instruction))

    def verdict(self, instruction: str, a: str, b: str) -> str:
        ra, rb = synthetic.reward(instruction, a), synthetic.reward(instruction, b)
        return "A" if ra > rb else "B" if rb > ra else "Neutral"


def make_backend(spec: dict):
    if spec["backend"] == "oracle":
        return OracleJudge(spec)
    if spec["backend"] == "local":
        return LocalJudge(spec)
    return HTTPJudge(spec)


def judge_id(spec: dict) -> str:
    return f"{spec['backend']}:{spec.get('model') or ''}:{PROMPT_VERSION}"


# ----------------------------------------------------------------------------- cache


class VerdictCache:
    """Append-only JSONL of verdicts; each line is written and fsynced as soon as it is known, so a kill loses
    at most the call in flight. Safe for threads and for several processes sharing the file.

    A kill mid-write leaves a line without its newline: the next write starts on a line of its own, so the cut line
    costs one verdict, not every verdict appended after it. A cut or hand-edited line (not JSON, no key, a verdict
    other than A, B, Neutral or invalid) is reported once with its file and line and left out: that call is paid
    for again, once, and stored right."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.entries = {}
        if self.path.exists():
            for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    if not isinstance(entry.get("key"), str) or entry.get("verdict") not in (*VERDICTS, INVALID):
                        raise ValueError(f"verdict {entry.get('verdict')!r:.20}")
                except (ValueError, AttributeError) as exc:
                    reason = "cut short or not JSON" if isinstance(exc, json.JSONDecodeError) else exc
                    print(f"warning: {self.path}: line {number} dropped ({reason}); asked again", file=sys.stderr)
                    continue
                self.entries[entry["key"]] = entry["verdict"]

    @staticmethod
    def key(judge: str, instruction: str, a: str, b: str) -> str:
        return hashlib.sha256(json.dumps([judge, instruction, a, b]).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, verdict: str) -> None:
        line = (json.dumps({"key": key, "verdict": verdict}) + "\n").encode()
        with self.lock, open(self.path, "a+b") as sink:
            fcntl.flock(sink, fcntl.LOCK_EX)
            sink.seek(0, os.SEEK_END)
            if sink.tell():
                sink.seek(-1, os.SEEK_END)
                if sink.read(1) != b"\n":  # a line cut by a kill: end it, or this one would be glued to it
                    line = b"\n" + line
            sink.write(line)
            sink.flush()
            os.fsync(sink.fileno())
            fcntl.flock(sink, fcntl.LOCK_UN)
            self.entries[key] = verdict


# ----------------------------------------------------------------------------- judging


class Judge:
    def __init__(self, spec: dict, cache_dir: str | Path, sleep=time.sleep, name: str | None = None):
        self.spec = spec
        self.backend = make_backend(spec)
        self.id = judge_id(spec)
        self.label = f"'{name}' ({self.id})" if name else self.id  # how errors name it
        name = hashlib.sha256(self.id.encode()).hexdigest()[:16]
        self.cache = VerdictCache(Path(cache_dir) / f"{name}.jsonl")
        self.sleep = sleep
        self.calls = 0  # backend calls made by this process, retries included

    def supports(self, instruction: str) -> bool:
        return getattr(self.backend, "supports", lambda _: True)(instruction)

    def _ask_with_retries(self, instruction: str, a: str, b: str) -> str:
        if isinstance(self.backend, OracleJudge):
            return self.backend.verdict(instruction, a, b)
        prompt = JUDGE_PROMPT.format(instruction=instruction, a=a, b=b)
        last, malformed = None, 0
        for attempt in range(self.spec["max_retries"] + 1):
            try:
                self.calls += 1
                try:
                    answer = self.backend.ask(prompt)
                except JudgeError as exc:  # permanent: stop before spending the retry budget
                    raise JudgeError(f"judge {self.label}: {exc}") from None
                verdict = parse_verdict(answer)
                if verdict is not None:
                    return verdict
                malformed += 1
                if malformed == MALFORMED_ATTEMPTS:
                    return INVALID
                last = TransientError("malformed verdict")
            except TransientError as exc:
                last = exc
            if attempt < self.spec["max_retries"]:
                wait = min(self.spec["max_backoff_s"], self.spec["backoff_s"] * 2**attempt)
                if last.retry_after is not None:
                    wait = min(self.spec["max_backoff_s"], max(wait, last.retry_after))
                self.sleep(wait * random.uniform(0.5, 1.0))
        raise JudgeError(f"judge {self.label}: no valid verdict after {self.spec['max_retries'] + 1} attempts ({last})")

    def verdict(self, instruction: str, a: str, b: str) -> str:
        key = VerdictCache.key(self.id, instruction, a, b)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        verdict = self._ask_with_retries(instruction, a, b)
        self.cache.put(key, verdict)
        return verdict

    def compare(self, items: list[tuple[str, str, str]], desc: str = "judge") -> list[str]:
        """Outcome per (instruction, first, second): 'win' (first better in both orders), 'loss', or 'tie'."""
        calls = [(x, a, b) for x, a, b in items] + [(x, b, a) for x, a, b in items]
        unique = list(dict.fromkeys(calls))  # equal responses make both orders one call: never ask it twice at once
        with ThreadPoolExecutor(max_workers=self.spec["concurrency"]) as pool:
            answers = dict(
                zip(unique, tqdm(pool.map(lambda c: self.verdict(*c), unique), total=len(unique), desc=desc))
            )
        forward, backward = calls[: len(items)], calls[len(items) :]
        return [combine(answers[c1], answers[c2]) for c1, c2 in zip(forward, backward)]


def combine(forward: str, backward: str) -> str:
    """Both orders must agree; disagreement (position bias) counts as a tie. A pair with an invalid verdict in either
    order is 'invalid': left out of the rates and counted."""
    if INVALID in (forward, backward):
        return INVALID
    first_wins = {"A": "win", "B": "loss", "Neutral": "tie"}[forward]
    swapped = {"A": "loss", "B": "win", "Neutral": "tie"}[backward]
    return first_wins if first_wins == swapped else "tie"


def win_rates(outcomes: list[str], samples: int, confidence: float, seed: int) -> dict:
    """Win/tie/loss percentages of the first system, with a bootstrap CI on the win rate (resampling prompts). Pairs
    the judge never gave a verdict on are counted in `invalid` and left out of `n`."""
    invalid = outcomes.count(INVALID)
    outcomes = [o for o in outcomes if o != INVALID]
    n = len(outcomes)
    wins = [100.0 * (o == "win") for o in outcomes]
    pct = lambda label: 100.0 * outcomes.count(label) / n if n else float("nan")  # noqa: E731
    return {
        "n": n,
        "win": pct("win"),
        "tie": pct("tie"),
        "loss": pct("loss"),
        "win_ci": list(mean_ci(wins, samples, confidence, seed)),
        "invalid": invalid,
    }


# ----------------------------------------------------------------------------- one judge job


def _instruction(row: dict) -> str:
    """What the judge sees as the instruction: the user turn, after earlier user turns for later MT-Bench turns."""
    if "conversation" not in row:
        return row["prompt"]
    user_turns = [m["content"] for m in row["conversation"] if m["role"] == "user"]
    if len(user_turns) == 1:
        return user_turns[0]
    earlier = "\n".join(f"- {t}" for t in user_turns[:-1])
    return f"(Later turn of a conversation. Earlier user turns:\n{earlier})\n\n{user_turns[-1]}"


def _pairs(ours: list[dict], theirs: list[dict], key, paths=("rpo", "baseline")) -> list[tuple[str, str, str]]:
    """(instruction, ours, theirs) per prompt; generations that do not cover the same prompts (one of them cut short
    or left by another run) are refused by file."""
    other = {key(r): r for r in theirs}
    missing = [key(r) for r in ours if key(r) not in other]
    if missing:
        raise DataError(
            f"{paths[1]}: has no generation for {len(missing)} prompts of {paths[0]} (first: {missing[0]}); "
            "rerun its generate step"
        )
    return [(_instruction(r), r["generation"], other[key(r)]["generation"]) for r in ours]


def run(cfg: dict, cell: dict, judge_name: str, scope: str, generations: dict, out_path) -> dict:
    """RPO against each other system in `generations`, by one judge: in-domain (`scope` 'in_domain', paired by
    prompt) or on every OOD benchmark (`scope` 'ood', paired by benchmark, question and turn)."""
    spec = cfg["judge"]["judges"][judge_name]
    judge = Judge(spec, cfg["judge"]["cache_dir"], name=judge_name)
    boot = cfg["score"]["bootstrap"]
    stats = lambda outcomes: win_rates(outcomes, boot["samples"], boot["confidence"], boot["seed"])  # noqa: E731
    ours = read_jsonl(generations["rpo"])
    result = {
        "judge": judge_name,
        "judge_id": judge.id,
        **cell,
        "scope": scope,
        "in_domain": {},
        "ood": {},
        "skipped": [],
    }
    for baseline in [m for m in generations if m != "rpo"]:
        theirs = read_jsonl(generations[baseline])
        if scope == "in_domain":
            test = [r for r in ours if split_of(r.get("split")) == "test"]  # judged on the test split only
            files = (generations["rpo"], generations[baseline])
            items = [i for i in _pairs(test, theirs, lambda r: r["prompt_id"], files) if judge.supports(i[0])]
            result["in_domain"][baseline] = stats(judge.compare(items, desc=f"{judge_name}: rpo vs {baseline}"))
            continue
        for bench in cfg["ood"]["benchmarks"]:
            rows = [r for r in ours if r["benchmark"] == bench]
            files = (generations["rpo"], generations[baseline])
            items = _pairs(rows, theirs, lambda r: (r["benchmark"], r["id"], r["turn"]), files)
            if not all(judge.supports(i[0]) for i in items):
                note = f"{bench}: judge '{judge_name}' cannot judge its prompts"
                result["skipped"] += [note] if note not in result["skipped"] else []
                continue
            outcomes = judge.compare(items, desc=f"{judge_name}: rpo vs {baseline} on {bench}")
            result["ood"].setdefault(bench, {})[baseline] = stats(outcomes)
    result["backend_calls"] = judge.calls
    with tracking.run(
        cfg, "judge", Path(out_path).parent, cell | {"judge": judge_name, "scope": scope}, params={"judge": dict(spec)}
    ) as mlrun:
        flat = {f"win_{b}": r["win"] for b, r in result["in_domain"].items()}
        flat |= {f"{bench}_win_{b}": r["win"] for bench, by in result["ood"].items() for b, r in by.items()}
        mlrun.log_metrics({k: v for k, v in flat.items() if not math.isnan(v)})
        result["mlflow_run_id"] = mlrun.run_id
        io.write_text(out_path, json.dumps(result, indent=2))
        mlrun.log_artifact(out_path)
    return result
