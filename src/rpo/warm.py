"""Warm start for local runs: a fork server that pays the torch/transformers/MLflow imports once.

A pipeline job is a short `rpo <step>` process, and on a laptop most of a small job's time is importing torch,
transformers and MLflow (about 4 s on 2 cores). With RPO_WARM=1 (Linux only), `rpo` becomes a thin client: it
hands its arguments, working directory, environment and its stdin/stdout/stderr file descriptors to a server
that has those libraries imported, and the server forks a child that runs the step exactly as `rpo` would,
writing straight to the client's streams. The pattern is Python's multiprocessing "forkserver".

- One server per (python, package source, import-time environment): editing the package or changing
  HF_*/TRANSFORMERS_*/MLFLOW_*/TORCH* variables starts a new one, so no stale code ever runs.
- The server imports but never runs torch, opens no MLflow store and starts no threads of its own, so
  forking it is safe; each child sets torch's thread count from OMP_NUM_THREADS as a fresh process would.
- If the client dies (Snakemake cancels the job), its socket closes and the child exits.
- The server exits after RPO_WARM_IDLE seconds (default 120) with no job; its socket lives in a 0700 folder.
- Any failure to reach or start a server falls back to running the step in this process; so does a server that
  does not hand the step to a child within RPO_WARM_ACK_S (a stopped server). A child that stops sending its
  heartbeat for RPO_WARM_SILENCE_S is killed and the step fails: no wait is unbounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

PRELOAD = [
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "yaml",
    "jsonschema",
    "tqdm",
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "transformers.models.t5.modeling_t5",
    "safetensors.torch",
    "mlflow",
    "mlflow.tracking",
    "mlflow.entities",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.tracing.processor.base_mlflow",  # imported when a client first sets the tracking URI (~0.2 s a job)
    "rouge_score.rouge_scorer",
    "bert_score",
    "rpo.cli",
    "rpo.config",
    "rpo.tracking",
    "rpo.data.prepare",
    "rpo.data.variants",
    "rpo.reference.init",
    "rpo.reference.sample",
    "rpo.reference.logprobs",
    "rpo.train.loop",
    "rpo.evaluate.generate",
    "rpo.evaluate.score",
    "rpo.evaluate.judges",
    "rpo.report.tables",
    "rpo.report.figures",
    "rpo.report.comparison",
    "rpo.report.mlflow_run",
]
# Read by libraries when they are imported, so a server started under other values would not behave the same.
KEY_PREFIXES = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "MLFLOW_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "PYTHON",
    "LD_",
    "KMP_",
)
# Set per job by Snakemake (the job's threads); applied in each child rather than fixed at the server's start.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
START_TIMEOUT_S = 120
# A server that does not acknowledge a step within ACK_TIMEOUT_S is treated as gone (stopped, swapped out, hung):
# the step runs directly. A running child sends a heartbeat every HEARTBEAT_S; a child silent for
# SILENCE_TIMEOUT_S (stopped or hung mid-step) fails the step with a message instead of waiting forever.
ACK_TIMEOUT_S = float(os.environ.get("RPO_WARM_ACK_S", "10"))
HEARTBEAT_S = 2.0
SILENCE_TIMEOUT_S = float(os.environ.get("RPO_WARM_SILENCE_S", "120"))
_CODE = struct.Struct("!i")
_READY = b"?"
_STARTED = b"+"
_HEARTBEAT = b"."
_DONE = b"="


def enabled() -> bool:
    """Asked for, on Linux, and not inside a SLURM job (one step per job there: nothing to share)."""
    return (
        os.environ.get("RPO_WARM") == "1"
        and sys.platform.startswith("linux")
        and hasattr(socket, "send_fds")
        and "SLURM_JOB_ID" not in os.environ
    )


def server_key(env=None) -> str:
    """What the server's imports depend on: the interpreter, every source file of the package, the environment."""
    env = os.environ if env is None else env
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(sys.executable.encode())
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".yaml", ".json"):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    for name in sorted(env):
        if name.startswith(KEY_PREFIXES):
            digest.update(f"{name}={env[name]}".encode())
    return digest.hexdigest()[:20]


def socket_dir() -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    folder = base / f"rpo-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} must be owned by you and private (mode 0700)")
    return folder


def socket_path() -> Path:
    return socket_dir() / f"{server_key()}.sock"


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


# ---- client -------------------------------------------------------------------------------------------------


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(ACK_TIMEOUT_S)  # connect and every read below are bounded
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _start_server(path: Path) -> socket.socket | None:
    """Start a server for `path` (under a lock, so racing clients start one) and wait until it answers."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if conn := _connect(path):
            return conn
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a server that was killed
        # The server imports torch without this job's thread limits: each child applies its own job's.
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
        with open(path.with_suffix(".log"), "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "rpo.warm", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and server.poll() is None:
            if conn := _connect(path):
                return conn
            time.sleep(0.05)
    return None


def server_up() -> bool:
    """A server for this environment answers now."""
    try:
        conn = _connect(socket_path())
    except OSError:
        return False
    if conn is not None:
        conn.close()
    return conn is not None


def prestart() -> None:
    """Start the server in the background, without waiting for it: a light step (one that imports no model library)
    runs directly while the server imports for the heavy steps that follow. A forked helper holds the start lock
    until the server answers, so racing clients still start one; it lets go of this job's output streams first (a
    `| tee log` waits for every writer)."""
    try:
        path = socket_path()
    except OSError:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        return
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        with contextlib.suppress(OSError):
            if conn := _start_server(path):
                conn.close()
    finally:
        os._exit(0)


def run_via_server(argv: list[str], entry: str) -> int | None:
    """Run `entry(argv)` in a forked child of the warm server; None when no server could be used.
    `entry` is a "module:function" string: the function takes argv and returns the exit code."""
    try:
        path = socket_path()
        conn = _connect(path) or _start_server(path)
    except OSError as exc:
        print(f"rpo: warm start unavailable ({exc}); running directly", file=sys.stderr)
        return None
    if conn is None:
        print(f"rpo: warm server did not start (see {path.with_suffix('.log')}); running directly", file=sys.stderr)
        return None
    with conn:
        request = json.dumps({"entry": entry, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            # The streams are handed over only once a child exists to take them: file descriptors sent to a server
            # that never accepts would sit in its socket, holding this job's output pipes open (a `| tee` hangs).
            if conn.recv(1) != _READY:
                return None
            socket.send_fds(conn, [_CODE.pack(len(request)) + request], [0, 1, 2])
            started = conn.recv(1) == _STARTED
            child = _CODE.unpack(_recv_exact(conn, _CODE.size))[0] if started else None
        except TimeoutError:
            # Closing the connection makes a child forked later exit at once (it watches for the client leaving);
            # removing the socket makes the next step start a fresh server instead of waiting on this one.
            print(f"rpo: warm server did not answer within {ACK_TIMEOUT_S:g} s; running directly", file=sys.stderr)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        except OSError:
            started = False
        if not started:  # a server shutting down as we connected: nothing has run yet
            return None
        return _wait_for_code(conn, child)


def _wait_for_code(conn: socket.socket, child: int) -> int:
    """The running child's exit code, reading its heartbeats; bounded by SILENCE_TIMEOUT_S between two of them.
    A silent child is killed: it holds this job's output streams, which a `| tee log` would otherwise wait on."""
    conn.settimeout(SILENCE_TIMEOUT_S)
    try:
        while (byte := conn.recv(1)) == _HEARTBEAT:
            pass
        if byte == _DONE:
            return _CODE.unpack(_recv_exact(conn, _CODE.size))[0]
    except TimeoutError:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
        print(
            f"rpo: the warm child (pid {child}) sent nothing for {SILENCE_TIMEOUT_S:g} s (stopped or hung); "
            "killed it, the step failed",
            file=sys.stderr,
        )
        return 1
    except ConnectionError:
        pass
    print("rpo: the warm child died without an exit code", file=sys.stderr)
    return 1


# ---- server -------------------------------------------------------------------------------------------------


def _child(conn: socket.socket, set_at_import: dict) -> None:
    """In the forked child: become the client's `rpo` process, run the step, send the exit code."""
    conn.sendall(_READY)
    conn.settimeout(ACK_TIMEOUT_S)  # the client sends its request at once; one that never does is not waited on
    header, fds, _, _ = socket.recv_fds(conn, _CODE.size, 3)
    request = json.loads(_recv_exact(conn, _CODE.unpack(header)[0]))
    conn.settimeout(None)  # from here the only read waits for the client to leave, for as long as the step runs
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name, value in set_at_import.items():  # what the preloaded modules would have set in a fresh process
        os.environ.setdefault(name, value)
    sys.argv = ["rpo", *request["argv"]]
    conn.sendall(_STARTED + _CODE.pack(os.getpid()))

    send_lock = threading.Lock()

    def exit_when_client_leaves():  # the client only closes after reading the code, or when it was killed
        with contextlib.suppress(OSError):
            conn.recv(1)
        os._exit(143)

    def heartbeat():  # tells the client this child is alive (a stopped child sends nothing)
        while True:
            time.sleep(HEARTBEAT_S)
            with send_lock, contextlib.suppress(OSError):
                conn.sendall(_HEARTBEAT)

    threading.Thread(target=exit_when_client_leaves, daemon=True).start()
    threading.Thread(target=heartbeat, daemon=True).start()
    import numpy as np  # preloaded by the server; the client, which imports this module, must not pay for them
    import torch

    np.random.seed()  # a fresh process's global numpy state is random; torch's default seed is fixed anyway
    if threads := os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(threads)))
    module, _, function = request["entry"].partition(":")
    try:
        code = getattr(importlib.import_module(module), function)(request["argv"])
    except SystemExit as exc:  # as the interpreter treats it: None is 0, a message is printed and exits 1
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - report like an uncaught exception in a normal process
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    with send_lock, contextlib.suppress(OSError):
        conn.sendall(_DONE + _CODE.pack(code))
    os._exit(code)


def serve(path: Path, idle_s: float) -> None:
    before = dict(os.environ)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an optional module missing only costs its import later
            print(f"preload {name}: {exc}", file=sys.stderr)
    # Modules may set defaults in os.environ when imported (rpo.tracking caps MLflow's HTTP retries); each child
    # takes the client's environment, so these are put back unless the client set them itself.
    set_at_import = {k: v for k, v in os.environ.items() if before.get(k) != v}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    inode = path.stat().st_ino
    print(f"{time.ctime()}: serving {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
    children, last_active = set(), time.monotonic()

    def fork_child():
        conn, _ = listener.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            try:
                _child(conn, set_at_import)
            finally:
                os._exit(1)
        conn.close()
        children.add(pid)

    while children or time.monotonic() - last_active < idle_s:
        if select.select([listener], [], [], 0.5)[0]:
            fork_child()
        for pid in list(children):
            if os.waitpid(pid, os.WNOHANG)[0]:
                children.discard(pid)
                last_active = time.monotonic()
    # Idle: stop taking new clients (they start another server), then serve the ones already queued.
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == inode:
            path.unlink()
    while select.select([listener], [], [], 0)[0]:
        fork_child()
    listener.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(os.environ.get("RPO_WARM_IDLE", "120")))
