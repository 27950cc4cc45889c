"""Docs that cannot drift: every code block of README.md and docs/*.md runs, the site builds with --strict.

A page's blocks run in order in one fresh working directory (the repository's ``configs/``, ``docs/`` and
``mkdocs.yml`` linked into it):
``bash``/``sh`` blocks with ``bash -eu -o pipefail``, ``python`` blocks in one Python process per page that
keeps one namespace, so a later block sees the names of an earlier one. ``text``, ``yaml`` and ``json`` blocks
are shown, not run; any other info string (or none) is an error, so nothing is left untested by accident.

An HTML comment on the line right before a block marks it:

- ``<!-- docs-test: slow -->``: the block trains or converts (TensorFlow alone takes seconds to import);
- ``<!-- docs-test: skip REASON -->``: the block cannot run here (it installs this package, needs several
  machines or data that is not in the repository); the reason is required and printed.

Each page is one test. A page with a slow block is two: its *fast prefix* (the blocks before its first slow
one) runs with the default ``-m "not slow"`` suite, and the whole page runs under ``-m slow``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = ("python", "bash", "sh")
SHOWN = ("text", "yaml", "json")
FAST_TIMEOUT_S = 60
SLOW_TIMEOUT_S = 900
README_MAX_LINES = 300
LINKED = ("configs", "docs", "mkdocs.yml")  # reachable from every page's working directory, as in the repository
OUTPUT_SHOWN = 8000  # characters of a failing block's output put into the failure message

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>\S+)\s*(?P<reason>.*?)\s*-->\s*$")


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str = "run"  # run | slow | skip
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse(page: Path) -> tuple[list[Block], list[str]]:
    """Every fenced block of ``page`` with its marker, and the problems found (unknown markers, bad labels)."""
    blocks, problems, pending = [], [], None
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        opening = FENCE.match(line)
        if directive:
            if pending is not None:
                problems.append(f"{page.relative_to(ROOT)}:{pending[0]}: docs-test marker not followed by a block")
            pending = (i + 1, directive["kind"], directive["reason"])
            i += 1
            continue
        if opening is None:
            if pending is not None:
                problems.append(f"{page.relative_to(ROOT)}:{pending[0]}: docs-test marker not followed by a block")
                pending = None
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"]
        body, j = [], i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if closing and closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence) and not closing["info"]:
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        else:
            problems.append(f"{page.relative_to(ROOT)}:{i + 1}: unclosed code block")
        block = Block(page, i + 1, info.lower(), "\n".join(body) + "\n")
        where = block.where
        if block.lang not in RUN + SHOWN:
            problems.append(f"{where}: code block labelled {info or '(nothing)'!r}; use one of {', '.join(RUN + SHOWN)}")
        if pending is not None:
            _, kind, reason = pending
            if block.lang not in RUN:
                problems.append(f"{where}: docs-test marker on a {block.lang!r} block, which never runs")
            if kind == "skip" and not reason:
                problems.append(f"{where}: docs-test: skip needs a reason")
            elif kind == "slow" and reason:
                problems.append(f"{where}: docs-test: slow takes no argument, got {reason!r}")
            elif kind not in ("skip", "slow"):
                problems.append(f"{where}: unknown docs-test marker {kind!r} (skip REASON | slow)")
            else:
                block.mode, block.reason = kind, reason
            pending = None
        blocks.append(block)
        i = j + 1
    if pending is not None:
        problems.append(f"{page.relative_to(ROOT)}:{pending[0]}: docs-test marker not followed by a block")
    return blocks, problems


def runnable(page: Path) -> list[Block]:
    return [b for b in parse(page)[0] if b.lang in RUN]


def _cases():
    for page in PAGES:
        blocks = runnable(page)
        if not any(b.mode != "skip" for b in blocks):
            continue
        name = str(page.relative_to(ROOT))
        first_slow = next((k for k, b in enumerate(blocks) if b.mode == "slow"), None)
        if first_slow is None:
            yield pytest.param(page, len(blocks), id=name)
            continue
        if any(b.mode == "run" for b in blocks[:first_slow]):
            yield pytest.param(page, first_slow, id=f"{name}-fast-prefix")
        yield pytest.param(page, len(blocks), id=f"{name}-all", marks=pytest.mark.slow)


class _Python:
    """One Python process per page; each block is exec'd in the same namespace, with its output in a log file."""

    DRIVER = textwrap.dedent("""
        import json, os, sys, traceback
        results = int(sys.argv[1])
        namespace = {"__name__": "__main__"}
        for request in sys.stdin:
            request = json.loads(request)
            try:
                exec(compile(request["code"], request["name"], "exec"), namespace)
                status = "ok"
            except BaseException:
                traceback.print_exc()
                status = "failed"
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(results, (status + "\\n").encode())
    """)

    def __init__(self, cwd: Path, env: dict, log: Path):
        self.results, write_end = os.pipe()
        self.log = open(log, "ab")
        self.process = subprocess.Popen([sys.executable, "-u", "-c", self.DRIVER, str(write_end)], cwd=cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
                                        pass_fds=(write_end,), start_new_session=True)
        os.close(write_end)

    def run(self, block: Block, timeout: float) -> str:
        """``"ok"``, ``"failed"`` or ``"timeout"``."""
        request = json.dumps({"code": block.code, "name": f"<{block.where}>"}) + "\n"
        try:
            self.process.stdin.write(request.encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            return "failed"
        ready, _, _ = select.select([self.results], [], [], timeout)
        if not ready:
            self.close(kill=True)
            return "timeout"
        status = os.read(self.results, 64).decode().strip()
        return status or "failed"  # empty: the process died

    def close(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.stdin.close()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.results)
        self.log.close()


def _shell(block: Block, cwd: Path, env: dict, log: Path, timeout: float) -> str:
    with open(log, "ab") as out:
        process = subprocess.Popen(["bash", "-eu", "-o", "pipefail", "-c", block.code], cwd=cwd, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return "ok" if process.wait(timeout=timeout) == 0 else f"failed (exit {process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "timeout"
        finally:
            try:  # what the block left running in the background goes with it
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _environment(ray_tmp: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TF_USE_LEGACY_KERAS"))}
    env.update(MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1", NO_MKDOCS_2_WARNING="1", RAY_USAGE_STATS_ENABLED="0")
    if ray_tmp is not None:
        env["RAY_TMPDIR"] = str(ray_tmp)
    return env


@pytest.mark.parametrize("page, count", list(_cases()))
def test_page_examples_run(page, count, tmp_path):
    """The page's first ``count`` runnable blocks, in order, in one working directory."""
    work = tmp_path / "work"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    # Ray's socket paths must stay under 108 bytes, which a pytest tmp_path does not
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env, python = _environment(ray_tmp), None
    try:
        for n, block in enumerate(runnable(page)[:count]):
            if block.mode == "skip":
                print(f"skipped {block.where}: {block.reason}")
                continue
            log = tmp_path / f"block{n}.log"
            timeout = SLOW_TIMEOUT_S if block.mode == "slow" else FAST_TIMEOUT_S
            if block.lang == "python":
                log = tmp_path / "python.log"
                python = python or _Python(work, env, log)
                start = log.stat().st_size
                status = python.run(block, timeout)
                output = log.read_bytes()[start:].decode(errors="replace")
                if status == "timeout":
                    python = None
            else:
                status = _shell(block, work, env, log, timeout)
                output = log.read_text(errors="replace")
            if status != "ok":
                pytest.fail(f"{block.where}: {block.lang} block {status}"
                            + (f" after {timeout} s" if status == "timeout" else "")
                            + f"\n--- block ---\n{block.code}--- output ---\n{output[-OUTPUT_SHOWN:]}", pytrace=False)
    finally:
        if python is not None:
            python.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_code_blocks_are_labelled_and_markers_are_valid():
    problems = [p for page in PAGES for p in parse(page)[1]]
    assert problems == []


def test_skipped_blocks_say_why():
    skipped = [f"{b.where}: {b.reason}" for page in PAGES for b in runnable(page) if b.mode == "skip"]
    print("\n".join(skipped))
    assert all(b.reason for page in PAGES for b in runnable(page) if b.mode == "skip")


def test_site_builds_strict(tmp_path):
    env = _environment()
    # no --quiet: it hides the warnings from --strict too, and the build then passes whatever they say
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").exists()


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def _headings(page: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    blocks = parse(page)[0]
    inside = {n for b in blocks for n in range(b.line, b.line + b.code.count("\n") + 2)}
    return {slugify(re.sub(r"[`*]", "", line.lstrip("#").strip()), "-")
            for n, line in enumerate(page.read_text().splitlines(), 1)
            if line.startswith("#") and n not in inside}


def test_readme_links_resolve():
    """README links into docs/ (and anything else relative) name files that exist, and headings that exist."""
    text = (ROOT / "README.md").read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = ROOT / path if path else ROOT / "README.md"
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _headings(resolved):
            broken.append(target)
    assert broken == []


def test_nothing_cites_the_old_design_file():
    """The contracts live in docs/architecture.md; no page, module, test or script points elsewhere."""
    old = "DESIGN" + ".md"
    suffixes = {".py", ".md", ".yaml", ".yml", ".cfg", ".toml", ".txt", ".json"}
    places = [ROOT / "README.md", ROOT / "mkdocs.yml", *(p for folder in ("docs", "tests", "kerascomp", "scripts")
                                                           for p in (ROOT / folder).rglob("*"))]
    citing = sorted(str(p.relative_to(ROOT)) for p in places
                    if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts
                    and p.resolve() != Path(__file__).resolve() and old in p.read_text(errors="replace"))
    assert citing == []
