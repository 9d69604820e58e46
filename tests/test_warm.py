"""Warm start (RPO_WARM=1): `rpo` steps run in forked children of a server that imported torch, transformers and
MLflow once, with the client's arguments, directory, environment, streams and exit code."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, run_env

from rpo import warm

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="warm start is Linux-only")


@pytest.fixture
def warm_env(tmp_path):
    """An environment with its own socket folder; every server started under it is stopped afterwards, so none
    is still importing torch while later (timed) tests run."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    yield {**run_env(), "RPO_WARM": "1", "RPO_WARM_IDLE": "30", "XDG_RUNTIME_DIR": str(runtime)}
    for log in runtime.glob("rpo-warm-*/*.log"):
        for pid in map(int, re.findall(r"\(pid (\d+)\)", log.read_text())):
            if alive([pid]):
                stop(pid)


def rpo(*args, env, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "rpo"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False, **kwargs
    )


def server_pid(env) -> int:
    """The server's pid, once it serves (a light step such as `rpo config` starts it in the background)."""
    logs = list((Path(env["XDG_RUNTIME_DIR"]) / f"rpo-warm-{os.getuid()}").glob("*.log"))
    assert len(logs) == 1, logs
    deadline = time.monotonic() + 60
    while not (found := re.findall(r"\(pid (\d+)\)", logs[0].read_text())) and time.monotonic() < deadline:
        time.sleep(0.1)
    return int(found[-1])


def alive(pids) -> list[int]:
    """The processes among `pids` that exist and have not exited (zombies waiting to be reaped have)."""
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(pid))
        except FileNotFoundError:
            pass
    return found


def children(pid: int) -> list[int]:
    return alive(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def step_child(server: int, stream, fd: int) -> int:
    """The server's child that runs the step whose stream `stream` (the test's end of a pipe) it took as its
    descriptor `fd`. Other children come and go: a probe (`server_up`, the start helper) that connects and leaves
    is forked a child too, which exits as soon as it finds the connection closed."""
    pipe = os.readlink(f"/proc/self/fd/{stream.fileno()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in children(server):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == pipe:
                    return pid
        time.sleep(0.02)
    raise AssertionError(f"no child of the server {server} took the step's pipe {pipe}")


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)


def test_a_step_run_warm_matches_it_run_directly(warm_env, tmp_path):
    direct_env = {k: v for k, v in warm_env.items() if k != "RPO_WARM"}
    tiny = (REPO / "config" / "tiny.yaml").read_text()
    results = {}
    for name, env in (("direct", direct_env), ("warm", warm_env), ("warm again", warm_env)):
        out = tmp_path / name / "resolved.yaml"
        # stdin, a relative output path (the client's directory) and stdout all reach the child
        (tmp_path / name).mkdir()
        done = rpo(
            "config", "--config", "/dev/stdin", "--out", "resolved.yaml", env=env, cwd=tmp_path / name, input=tiny
        )
        assert done.returncode == 0, done.stderr
        results[name] = (done.stdout, yaml.safe_load(out.read_text()))
    assert results["warm"] == results["direct"] == results["warm again"]
    assert "config 'tiny' is valid" in results["warm"][0]
    pid = server_pid(warm_env)
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text("name: x\nmethods: [rpo]\nmodels: {m: {arch: causal, source: tiny}}\ntrain: {epochs: -1}\n")
        failed = rpo("config", "--config", str(bad), env=warm_env, cwd=tmp_path)
        assert failed.returncode == 2 and "train.epochs" in failed.stderr
        unknown = rpo("no-such-step", env=warm_env, cwd=tmp_path)
        assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
        # an error the CLI does not translate (judged generations without rpo=) keeps its traceback and exit code 1
        tiny_path = str(REPO / "config" / "tiny.yaml")
        cell = ["--model", "m", "--method", "rpo", "--judge", "j", "--out", "x.json"]
        crashed = rpo("judge", "--config", tiny_path, *cell, "--generations", "sft=x", env=warm_env, cwd=tmp_path)
        assert crashed.returncode == 1 and "Traceback" in crashed.stderr, crashed.stderr
    finally:
        stop(pid)


def test_environment_defaults_set_at_import_reach_the_step(warm_env, tmp_path):
    """rpo.tracking caps MLflow's HTTP retries when imported; the server imported it under its own environment, so
    without putting that default back an unreachable store would cost each warm step minutes of retries."""
    env = {**warm_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    env.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    for _ in range(2):  # the first run starts the server
        done = rpo("config", "--config", str(REPO / "config" / "tiny.yaml"), "--create-store", env=env, cwd=tmp_path)
        assert done.returncode == 0 and "MLflow unreachable" in done.stderr, done.stderr
    stop(server_pid(env))


def test_killing_the_client_stops_its_step(warm_env, tmp_path):
    assert rpo("config", "--config", str(REPO / "config" / "tiny.yaml"), env=warm_env, cwd=tmp_path).returncode == 0
    pid = server_pid(warm_env)
    try:
        # Reading a config from a stdin that stays open blocks the step until its client goes away.
        client = subprocess.Popen(
            [str(BIN / "rpo"), "config", "--config", "/dev/stdin"],
            env=warm_env,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        step = step_child(pid, client.stdin, 0)
        assert Path(f"/proc/{step}/cwd").resolve() == tmp_path.resolve()
        client.kill()
        client.wait()
        deadline = time.time() + 10
        while time.time() < deadline and step in children(pid):
            time.sleep(0.05)
        assert step not in children(pid), "the step outlived its client"
        client.stdin.close()
    finally:
        stop(pid)


def test_an_idle_server_exits_and_the_next_client_starts_another(warm_env, tmp_path):
    env = {**warm_env, "RPO_WARM_IDLE": "1"}
    assert rpo("config", "--config", str(REPO / "config" / "tiny.yaml"), env=env, cwd=tmp_path).returncode == 0
    pid = server_pid(env)
    deadline = time.time() + 20
    while time.time() < deadline and pid in alive([pid]):
        time.sleep(0.1)
    assert not list((Path(env["XDG_RUNTIME_DIR"]) / f"rpo-warm-{os.getuid()}").glob("*.sock"))
    assert rpo("config", "--config", str(REPO / "config" / "tiny.yaml"), env=env, cwd=tmp_path).returncode == 0
    deadline = time.time() + 60  # the light step started the next server in the background
    while time.time() < deadline and server_pid(env) == pid:
        time.sleep(0.1)
    assert server_pid(env) != pid


def test_the_server_key_follows_the_source_and_import_time_environment(tmp_path, monkeypatch):
    base = {"PATH": "/bin", "HF_HOME": "/a", "OMP_NUM_THREADS": "1"}
    key = warm.server_key(base)
    # set per job by Snakemake, applied in each child
    assert warm.server_key({**base, "OMP_NUM_THREADS": "4", "SNAKEMAKE_X": "y"}) == key
    assert warm.server_key({**base, "HF_HOME": "/b"}) != key
    assert warm.server_key({**base, "MLFLOW_TRACKING_URI": "http://x"}) != key
    package = tmp_path / "rpo"
    package.mkdir()
    (package / "warm.py").write_text("x = 1\n")
    (package / "train.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "__file__", str(package / "warm.py"))
    before = warm.server_key(base)
    os.utime(package / "train.py", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert warm.server_key(base) != before


def test_a_private_socket_folder_is_required(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = tmp_path / f"rpo-warm-{os.getuid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    with pytest.raises(PermissionError, match="0700"):
        warm.socket_dir()


def test_it_is_used_only_when_asked_for_and_never_inside_a_slurm_job(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("RPO_WARM", raising=False)
    assert not warm.enabled()
    monkeypatch.setenv("RPO_WARM", "1")
    assert warm.enabled()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not warm.enabled()


def test_a_server_that_cannot_start_leaves_the_step_to_run_directly(warm_env, tmp_path):
    env = {**warm_env, "RPO_WARM_IDLE": "not-a-number"}  # the server exits at once
    start = time.monotonic()
    done = rpo("prepare-data", "--config", str(REPO / "config" / "tiny.yaml"), "--out-dir", "d", env=env, cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "d" / "manifest.json").is_file()
    assert "running directly" in done.stderr and time.monotonic() - start < 60


def test_a_stopped_server_is_not_waited_on(warm_env, tmp_path):
    """A server that stops answering (SIGSTOP: swapped out, a debugger, a frozen container) took the socket and
    hung every later step forever; now a step waits RPO_WARM_ACK_S for its acknowledgement, then runs directly."""
    env = {**warm_env, "RPO_WARM_ACK_S": "2"}
    config = ["config", "--config", str(REPO / "config" / "tiny.yaml")]
    assert rpo(*config, env=env, cwd=tmp_path).returncode == 0  # starts the server
    pid = server_pid(env)
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        done = rpo(*config, env=env, cwd=tmp_path)
        assert done.returncode == 0 and "config 'tiny' is valid" in done.stdout
        assert "did not answer within 2 s; running directly" in done.stderr
        assert time.monotonic() - start < 30
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_child_that_stops_mid_step_fails_the_step_instead_of_hanging(warm_env, tmp_path):
    """The step's child stopped (SIGSTOP) while it runs: its heartbeats stop, and the client gives up after
    RPO_WARM_SILENCE_S with a message instead of waiting on the socket forever."""
    env = {**warm_env, "RPO_WARM_SILENCE_S": "6"}
    assert rpo("config", "--config", str(REPO / "config" / "tiny.yaml"), env=env, cwd=tmp_path).returncode == 0
    server = server_pid(env)
    step = subprocess.Popen(
        [str(BIN / "rpo"), "prepare-data", "--config", str(REPO / "config" / "demo.yaml"), "--out-dir", "d"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = step_child(server, step.stderr, 2)
    os.kill(child, signal.SIGSTOP)
    try:
        _, err = step.communicate(timeout=60)
        assert step.returncode == 1 and "sent nothing for 6 s (stopped or hung)" in err, err
        gone = time.monotonic() + 5  # SIGKILL reaches a stopped process asynchronously
        while alive([child]) and time.monotonic() < gone:
            time.sleep(0.05)
        assert not alive([child])
    finally:
        if alive([child]):
            os.kill(child, signal.SIGKILL)


def test_a_light_step_runs_at_once_and_starts_the_server_for_the_steps_after_it(warm_env, tmp_path):
    """`rpo config` with no server up runs in its own process instead of waiting for the server's imports, and
    starts the server in the background; the helper holding the start lock lets go of the job's output pipe, so a
    `| cat` (Snakemake's `| tee log`) ends with the step, not with the server's start."""
    start = time.monotonic()
    piped = subprocess.run(
        f"'{BIN / 'rpo'}' config --config '{REPO / 'config' / 'tiny.yaml'}' | cat",
        shell=True,
        env=warm_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    assert piped.returncode == 0 and "config 'tiny' is valid" in piped.stdout
    pid = server_pid(warm_env)  # waits until the background start serves
    assert took < 0.8 * (time.monotonic() - start), "the step waited for the server's start"
    assert alive([pid])
    heavy = rpo(
        "prepare-data", "--config", str(REPO / "config" / "tiny.yaml"), "--out-dir", "d", env=warm_env, cwd=tmp_path
    )
    assert heavy.returncode == 0 and "running directly" not in heavy.stderr and server_pid(warm_env) == pid
