"""Nothing lost under faults: a run stopped by Ctrl-C or SIGTERM, or by a full disk, leaves a valid state, says
how to go on in one ``Error:`` line, and ``--resume`` then writes the same bytes as a run that was never stopped.

The runs are real ``kerascomp run`` processes sent real signals; the full disk is a 100 KB tmpfs (in a user
namespace, where the kernel allows one) or a file size limit (RLIMIT_FSIZE, anywhere).
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from kerascomp.cli import main
from kerascomp.files import LOCK_FILE
from kerascomp.saving import load_model

pytestmark = pytest.mark.xdist_group("faults")  # one worker builds the module's reference run

# a teacher, a budget search over pruning (a pass, then a failure clearly over the budget), int8, bench
CONFIG = textwrap.dedent("""\
    seed: 0
    data: {spec: digits}
    teacher: {model: mlp, args: {hidden: [32]}, train: {epochs: 25}}
    stages:
      - prune: {input: teacher, max_drop: 1.0, epochs: 1}
      - convert: {models: [teacher, prune], quantize: [int8]}
      - bench: {runs: 2, warmup: 1}
    summary: {baseline: teacher_int8, final: prune_int8}
    """)


def _start(config, out, **options):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "kerascomp", "run", str(config), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def _stop_when(process, signum, ready):
    """Send ``signum`` once ``ready(lines so far)`` holds; the exit code and the ``Error:`` lines."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if ready(lines):
            process.send_signal(signum)
            break
    _, err = process.communicate(timeout=120)
    return process.returncode, [line for line in err.splitlines() if line.startswith("Error:")]


def _intact(out):
    """No temporary file, no lock; the state parses and names only files that exist, each with its sidecar."""
    assert not [p for p in out.rglob("*") if ".tmp" in p.name] and not (out / LOCK_FILE).exists()
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
    for stage in state.values():
        assert all((out / path).is_file() and (out / (path + ".json")).is_file() for path in stage["outputs"])
    return state


def _files(out):
    return {p.name: p.read_bytes() for p in sorted((out / "tflite_models").glob("*.tflite"))}


def _resume(config, out, capsys):
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run stopped by SIGINT in the teacher's training, then resumed: nothing had finished, so the resumed
    run is a whole one, the bytes the other tests' resumed runs must give."""
    folder = tmp_path_factory.mktemp("faults")
    config = folder / "run.yaml"
    config.write_text(CONFIG)
    out = folder / "out"
    code, errors = _stop_when(_start(config, out), signal.SIGINT, lambda lines: lines[-1].startswith("epoch  3/"))
    stopped = {"code": code, "errors": errors, "state": _intact(out), "teacher": (out / "models" / "teacher.keras").exists()}
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    return config, out, stopped


def test_ctrl_c_in_training_ends_at_a_batch_with_one_line_and_resume_runs_the_whole(reference):
    _, out, stopped = reference
    assert stopped["code"] == 130 and len(stopped["errors"]) == 1
    assert stopped["errors"][0].startswith("Error: stopped by SIGINT") and "--resume" in stopped["errors"][0]
    assert stopped["state"] == {} and not stopped["teacher"]
    assert set(_files(out)) == {"teacher_int8.tflite", "prune_int8.tflite"}


def test_sigterm_in_a_search_keeps_its_strongest_pass_and_resume_gives_the_same_bytes(reference, tmp_path, capsys):
    config, whole, *_ = reference
    out = tmp_path / "out"
    passed = lambda lines: any("-> pass" in line for line in lines) and "trying" in lines[-1]  # noqa: E731
    code, errors = _stop_when(_start(config, out), signal.SIGTERM, passed)
    assert code == 128 + signal.SIGTERM and len(errors) == 1 and errors[0].startswith("Error: stopped by SIGTERM")
    kept = out / "models" / "prune.interrupted.keras"
    assert f"is kept in {kept}" in errors[0] and "--resume" in errors[0]
    assert list(_intact(out)) == ["teacher"]
    history = json.loads((out / "models" / "prune.interrupted.keras.json").read_text())["compression"][-1]
    assert history["config"]["sparsity"] == 0.5 and load_model(kept).count_params() > 0
    printed = _resume(config, out, capsys)
    assert "[teacher] unchanged, skipped" in printed and "[prune] prune ..." in printed
    assert _files(out) == _files(whole)
    assert not kept.exists()  # the finished search supersedes what the stopped one kept


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_file_over_the_size_limit_is_one_line_nothing_partial_and_resume_gives_the_same_bytes(reference, tmp_path,
                                                                                                capsys):
    """RLIMIT_FSIZE makes a write fail as a full disk does (EFBIG for ENOSPC), on any machine."""
    config, whole, *_ = reference
    out = tmp_path / "out"
    process = _start(config, out, preexec_fn=_limit_file_size(40_000))  # the teacher (a .keras of 57 KB) fails
    _, err = process.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert process.returncode == 1 and len(errors) == 1, err[-2000:]
    assert f"cannot write {out / 'models' / 'teacher.keras'} (over the file size limit)" in errors[0]
    assert "teacher.keras was not written" in errors[0]
    assert _intact(out) == {} and not (out / "models" / "teacher.keras").exists()
    _resume(config, out, capsys)
    assert _files(out) == _files(whole)


def _namespaces() -> bool:
    """Whether this process may mount a tmpfs in a user namespace of its own (no root needed where allowed)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.slow  # 23 s; the file size limit above takes the same path in the quick suite
@pytest.mark.skipif(not _namespaces(), reason="no user namespaces here to mount a small tmpfs in")
def test_a_full_disk_is_one_line_naming_the_space_and_resume_after_freeing_it_gives_the_same_bytes(reference,
                                                                                                  tmp_path):
    config, whole, *_ = reference
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    run = f"{sys.executable} -m kerascomp run {config} --out {disk}/out"
    script = (f"mount -t tmpfs -o size=150k tmpfs {disk} && {{ {run} 2> {tmp_path}/first.err; "
              f"echo $? > {tmp_path}/first.code; mount -o remount,size=20m {disk} && {run} --resume "
              f"> {tmp_path}/second.out 2>&1; echo $? > {tmp_path}/second.code; cp -r {disk}/out {copy}; }}")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], timeout=300, check=True)
    errors = [line for line in (tmp_path / "first.err").read_text().splitlines() if line.startswith("Error:")]
    assert (tmp_path / "first.code").read_text().strip() == "1" and len(errors) == 1
    assert errors[0].startswith(f"Error: cannot write {disk}/out/") and "(no space left on the device)" in errors[0]
    assert (tmp_path / "second.code").read_text().strip() == "0", (tmp_path / "second.out").read_text()[-2000:]
    assert "unchanged, skipped" in (tmp_path / "second.out").read_text()  # the stages before the full disk stay
    _intact(copy)
    assert _files(copy) == _files(whole)


def test_every_atomic_write_past_the_space_says_what_it_needs_and_leaves_no_file(tmp_path):
    """A real EFBIG from the kernel (a soft file size limit on this process, lifted after), as a full disk gives."""
    from kerascomp.errors import KerascompError
    from kerascomp.files import write_bytes

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(KerascompError) as caught:
            write_bytes(tmp_path / "model.tflite", b"\0" * (3 * 2**20))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(caught.value).startswith(f"cannot write {tmp_path / 'model.tflite'} (over the file size limit): it "
                                        "needs 3.00 MB, ")
    assert list(tmp_path.iterdir()) == []
