"""Bad input to ``python -m benchmark run``: one ``error:`` line on stderr, exit code 2, no
traceback, and nothing written under ``--out``.

Every case calls the CLI's ``main(argv)`` in-process (it returns the exit code); a few smoke
tests run the real ``python -m benchmark`` in a subprocess (about 1-2 s of imports each).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m benchmark ARGS`` in a subprocess (offline, one thread), run from ``cwd``
    (default the repo root) with the repo importable; the tests' one CLI runner."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args],
        cwd=cwd or REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class CLIResult:
    """What ``main(argv)`` returned and printed (the fields of a CompletedProcess it needs)."""

    returncode: int
    stdout: str
    stderr: str


def call_main(*args: str) -> CLIResult:
    """``benchmark.cli.commands.main(ARGS)`` in this process, its output captured."""
    from benchmark.cli.commands import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own exits (--help); errors never get here
            code = exc.code if isinstance(exc.code, int) else 1
    return CLIResult(code, out.getvalue(), err.getvalue())


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# Each case: (CLI args after the common "run --out <tmp> [--steps 2]", given the inputs folder;
# substrings the error line must contain, "<inputs>" standing for that folder). "--steps 2" is
# added unless the case sets steps itself; later flags win over earlier ones in argparse.
CASES = [
    pytest.param(
        lambda d: ["--methods", "sds,foo"],
        ["unknown method", "'foo'", "sds"],
        id="unknown-method",
    ),
    pytest.param(
        lambda d: ["--prompts", str(write_text(d / "p.txt", "a red sphere\na purple elephant\n"))],
        ["unknown prompt", "'a purple elephant'", "'a red sphere'", "'a blue cube'"],
        id="unknown-prompt",
    ),
    pytest.param(
        lambda d: ["--prompts", str(d / "no_such_prompts.txt")],
        ["not found", "no_such_prompts.txt"],
        id="prompts-missing",
    ),
    pytest.param(
        lambda d: ["--prompts", str(d)],
        ["not a file", "<inputs>"],
        id="prompts-is-directory",
    ),
    pytest.param(
        lambda d: ["--prompts", str(write_text(d / "empty.txt", ""))],
        ["no prompts", "empty.txt"],
        id="prompts-empty",
    ),
    pytest.param(
        lambda d: [
            "--prompts",
            str(write_text(d / "comments.txt", "# only comments\n\n   \n  # indented\n\n")),
        ],
        ["no prompts", "comments.txt"],
        id="prompts-only-comments",
    ),
    pytest.param(
        lambda d: ["--prompts", str(write_bytes(d / "latin.txt", b"\xff\xfe\xfa"))],
        ["UTF-8", "latin.txt"],
        id="prompts-not-utf8",
    ),
    pytest.param(
        lambda d: ["--set", "foo.bar=1"],
        ["unknown config key", "'foo'", "valid keys", "steps", "sds"],
        id="set-unknown-key",
    ),
    pytest.param(
        lambda d: ["--config", str(write_text(d / "typo.yaml", "sds:\n  guidance_scle: 7.5\n"))],
        ["unknown config key", "'sds.guidance_scle'", "valid keys", "guidance_scale", "cfg_mode"],
        id="yaml-unknown-key",
    ),
    # No "--steps 2" here: an explicit --steps beats --set, so steps=abc would never be checked.
    pytest.param(
        lambda d: ["--set", "steps=abc"],
        ["'steps'", "'abc'", "integer"],
        id="set-bad-type",
    ),
    pytest.param(
        lambda d: ["--set", "sds.guidance_scale=high"],
        ["'sds.guidance_scale'", "'high'", "number"],
        id="set-bad-nested-type",
    ),
    pytest.param(lambda d: ["--steps", "-1"], ["steps", "-1"], id="steps-negative"),
    pytest.param(lambda d: ["--steps", "0"], ["steps", "0"], id="steps-zero"),
    pytest.param(
        lambda d: ["--backbone", "nope"],
        ["'backbone'", "'nope'", "'voxel'"],
        id="unknown-backbone",
    ),
    pytest.param(
        lambda d: ["--prior", "nope"],
        ["'prior'", "'nope'", "'world'"],
        id="unknown-prior",
    ),
    pytest.param(
        lambda d: ["--device", "tpu"],
        ["'device'", "'tpu'", "'cpu'", "'cuda'"],
        id="bad-device",
    ),
    pytest.param(lambda d: ["--seeds", "0,x"], ["--seeds", "0,x"], id="bad-seeds"),
    pytest.param(
        lambda d: ["--config", str(d / "missing.yaml")],
        ["not found", "missing.yaml"],
        id="config-missing",
    ),
    pytest.param(
        lambda d: ["--config", str(write_text(d / "bad.yaml", "steps: [1,\n  foo: {\n"))],
        ["not valid YAML", "bad.yaml"],
        id="config-malformed-yaml",
    ),
    pytest.param(
        lambda d: ["--config", str(write_bytes(d / "latin.yaml", b"steps: \xff\xfe\xfa\n"))],
        ["UTF-8", "latin.yaml"],
        id="config-not-utf8",
    ),
    pytest.param(
        lambda d: ["--config", str(write_text(d / "list.yaml", "- steps\n- 3\n"))],
        ["mapping", "list.yaml"],
        id="config-not-a-mapping",
    ),
    pytest.param(
        lambda d: ["--set", "steps"], ["--set", "key=value", "'steps'"], id="set-no-equals"
    ),
    # reliability (more in tests/test_reliability.py)
    pytest.param(
        lambda d: ["--seeds", str(2**63)],
        ["--seeds", "[0, 2**63)", str(2**63)],
        id="seed-too-large",
    ),
    pytest.param(
        lambda d: ["--config", str(write_text(d / "seeds.yaml", f"seeds: [0, {2**64}]\n"))],
        ["'seeds[1]'", "64-bit"],
        id="config-seed-too-large",
    ),
    pytest.param(
        lambda d: ["--set", "sds.guidance_scale=.nan"],
        ["'sds.guidance_scale'", "finite number", "nan"],
        id="guidance-nan",
    ),
    pytest.param(
        lambda d: ["--set", "sds.guidance_scale=.inf"],
        ["'sds.guidance_scale'", "finite number", "inf"],
        id="guidance-inf",
    ),
    pytest.param(
        lambda d: ["--set", "optim.eps=-1"], ["'optim'", "eps must be > 0"], id="optim-eps-negative"
    ),
    pytest.param(
        lambda d: ["--out", str(write_text(d / "a_file.txt", "x"))],
        ["--out", "a_file.txt", "not a folder"],
        id="out-is-a-file",
    ),
    pytest.param(
        # root writes into chmod-ed folders, so the unwritable folder is one in /proc
        lambda d: ["--out", "/proc/self/steinbench-runs"],
        ["cannot write to --out", "/proc/self/steinbench-runs"],
        id="out-not-writable",
    ),
    pytest.param(
        lambda d: ["--prompts", str(write_text(d / "nul.txt", "a red\x00sph\u202eere\n"))],
        ["unknown prompt", "'a red\\x00sph\\u202eere'"],
        id="control-characters-escaped",
    ),
    pytest.param(
        lambda d: ["--methods", "m" * 10_000],
        ["unknown method", "more characters)"],
        id="long-message-cut",
    ),
]


#: rows of docs/errors.md whose cases are tested in tests/test_reliability.py
RELIABILITY_ROWS = [
    "resume-in-use", "write-error", "manifest-not-an-object", "checkpoint-invalid",
    "checkpoint-wrong-shape", "make-fixtures-not-empty", "regress-bad-golden",
    "sweep-too-many-cells",
    "sweep-seed-out-of-range", "duplicate-seeds", "stale-temp-files",
]  # fmt: skip


def assert_clean_usage_error(proc: CLIResult | subprocess.CompletedProcess, out: Path) -> str:
    """Exit 2, a single 'error:' line on stderr, no traceback, nothing under ``out``."""
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode == 2, both
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    assert line.isprintable() and len(line) < 800, "control characters or an uncut line"
    assert line[len("error:") :].strip(), "empty error message"
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    return line


def _case_args(make_args, tmp_path: Path) -> tuple[list[str], Path, Path]:
    """The case's full ``run`` argv, its inputs folder and its --out folder."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    args = make_args(inputs)
    sets_steps = any(a == "--steps" or a.startswith("steps=") for a in args)
    common = ["--out", str(out)] if sets_steps else ["--steps", "2", "--out", str(out)]
    return ["run", *common, *args], inputs, out


@pytest.mark.parametrize(("make_args", "expected"), CASES)
def test_bad_input_is_one_line_usage_error(tmp_path, make_args, expected):
    argv, inputs, out = _case_args(make_args, tmp_path)
    line = assert_clean_usage_error(call_main(*argv), out)
    for text in expected:
        text = text.replace("<inputs>", str(inputs))
        assert text in line, f"{text!r} not in {line!r}"


#: the cases also run through ``python -m benchmark`` (exit code and stderr of the process)
SUBPROCESS_CASES = ["unknown-method", "set-unknown-key"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_subprocess(tmp_path, case_id):
    (case,) = [c for c in CASES if c.id == case_id]
    make_args, expected = case.values
    argv, inputs, out = _case_args(make_args, tmp_path)
    line = assert_clean_usage_error(run_cli(*argv), out)
    for text in expected:
        assert text.replace("<inputs>", str(inputs)) in line


def test_top_level_help():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout
    assert "run" in proc.stdout and "prompts" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_run_help():
    proc = run_cli("run", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout
    for flag in ("--methods", "--prompts", "--steps", "--seeds", "--out", "--config", "--set"):
        assert flag in proc.stdout, flag
    assert "Traceback" not in proc.stderr


def test_parser_does_not_import_torch():
    code = (
        "import sys, benchmark.cli.commands as c; c.build_parser(); print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", proc.stdout


ERRORS_DOC = REPO_ROOT / "docs" / "errors.md"


def error_table() -> dict[str, str]:
    """docs/errors.md's bad-input table: case -> its error cell."""
    text = ERRORS_DOC.read_text(encoding="utf-8")
    table = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith(("| case", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[-1]
    return rows


def test_error_table_lists_every_case():
    """Every bad-input test case (run, resume, sweep) has its row in docs/errors.md."""
    from tests.test_sweep import BAD_CASES

    table = ERRORS_DOC.read_text(encoding="utf-8").split("## Bad inputs", 1)[1]
    ids = [case.id for case in CASES] + list(BAD_CASES)
    ids += ["truncate_metrics", "corrupt_manifest", "bad_config", "corrupt_checkpoint"]
    ids += RELIABILITY_ROWS
    missing = [i for i in ids if i not in table]
    assert not missing, f"docs/errors.md's bad-input table lacks {missing}"


@pytest.mark.parametrize(("make_args", "expected"), CASES)
def test_error_table_says_what_the_cli_says(tmp_path, request, make_args, expected):
    """A run case's documented error is the CLI's line (DIR for the inputs folder; '...'
    stands for a cut, so the pieces between the cuts appear in order)."""
    case_id = request.node.callspec.id
    documented = error_table()[case_id].split("`")[1]
    argv, inputs, out = _case_args(make_args, tmp_path)
    line = assert_clean_usage_error(call_main(*argv), out).replace(str(inputs), "DIR")
    at = 0
    for piece in (p for p in documented.split("...") if p):
        found = line.find(piece, at)
        assert found >= 0, f"{case_id}: {piece!r} not in {line!r} (after {at})"
        at = found + len(piece)
