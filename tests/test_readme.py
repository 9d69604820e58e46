"""Every command the READMEs give runs as written, from a fresh checkout: in dry-run form where it would start a
cluster or a long job (`snakemake -n`, `make -n`, a benchmark's `--help`). Documents point only inside the
repository or at public sources."""

import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO, run_env

DOCUMENTS = ["README.md", "config/README.md", "profiles/slurm/README.md", "benchmarks/README.md", "docs/fidelity.md"]
COMMANDS = ("make ", "snakemake", ".venv/bin/", "rpo ", "RPO_WARM=", "python ", "conda ", "pip ", "source ")
# What a test cannot run here, and why (every other command runs).
NOT_RUN = {
    "conda ": "creates a conda environment (GPU clusters; this machine installs with make)",
    "pip ": "installs packages",
    "source ": "changes the calling shell only",
    ".venv/bin/mlflow ui": "starts the MLflow UI server (tests/test_mlflow_ui.py starts it and reads its pages)",
}


def documented_commands(path) -> list[str]:
    """Shell lines of a Markdown file's fenced and indented code blocks, continuation lines joined, comments cut."""
    text = (REPO / path).read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    blocks += [
        "\n".join(line[4:] for line in m.group(0).splitlines()) for m in re.finditer(r"(?:^ {4}.*\n)+", prose, re.M)
    ]
    lines = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.split(r"\s+#\s", line)[0].strip()
            if line.startswith(COMMANDS):
                lines.append(line)
    return lines


def dry_run_form(command: str) -> str | None:
    """The command as the test runs it; None where it is not run (NOT_RUN, or a <placeholder> to fill in)."""
    if command.startswith(tuple(NOT_RUN)) or "<" in command:
        return None
    words = shlex.split(command)
    if words[0] == "make":
        return shlex.join(["make", "-n", *words[1:]])
    if any(w.endswith("snakemake") for w in words):
        if "--report" in words:  # a report needs the finished run: check the same workflow and config plan
            at = words.index("--report")
            words = words[:at] + words[at + 2 :]
        return shlex.join(words if "-n" in words or "--lint" in words else [*words, "-n"])
    if words[0] == "python":
        return shlex.join([*words[:2], "--help"])
    return command


def every_command() -> list[tuple[str, str]]:
    return [(doc, c) for doc in DOCUMENTS for c in dict.fromkeys(documented_commands(doc))]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A fresh checkout: the repository's files (committed, or new and not ignored), the installed venv beside."""
    root = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes((REPO / name).read_bytes())
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def test_the_documents_give_commands_and_say_why_any_is_not_run():
    commands = every_command()
    assert len(commands) >= 20
    skipped = [c for _, c in commands if dry_run_form(c) is None]
    assert all(c.startswith(tuple(NOT_RUN)) or "<" in c for c in skipped)
    assert len(skipped) <= 8, skipped


def test_every_readme_command_runs_as_written_from_a_fresh_checkout(checkout):
    """The one-table rerun stopped with FileNotFoundError: --configfile read the target as a second config."""
    runnable = [(doc, c, dry_run_form(c)) for doc, c in every_command() if dry_run_form(c)]

    def run(item):
        doc, command, form = item
        env = run_env()
        env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
        done = subprocess.run(form, shell=True, cwd=checkout, capture_output=True, text=True, env=env, timeout=300)
        return doc, command, form, done

    with ThreadPoolExecutor(2) as pool:
        failed = [
            f"{doc}: `{command}` (ran `{form}`): exit {done.returncode}\n{(done.stdout + done.stderr)[-1500:]}"
            for doc, command, form, done in pool.map(run, runnable)
            if done.returncode != 0 or "Traceback" in done.stderr
        ]
    assert not failed, "\n\n".join(failed)


def test_documents_point_inside_the_repository_or_at_public_sources():
    """docs/fidelity.md cited the paper at a path outside the repository."""
    bad = []
    for doc in sorted(REPO.glob("*.md")) + sorted(REPO.glob("*/**/*.md")):
        if ".venv" in doc.parts or "results" in doc.parts:
            continue
        text = doc.read_text()
        bad += [f"{doc.relative_to(REPO)}: {m}" for m in re.findall(r"\.\./shared/\S*", text)]
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            resolved = (doc.parent / target).resolve()
            if REPO not in resolved.parents or not resolved.exists():
                bad.append(f"{doc.relative_to(REPO)}: link {target}")
    assert not bad, bad
