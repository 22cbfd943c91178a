"""The third adversarial round: one test per defect, each written to fail before its fix.
Data-loss cases compare the files byte for byte afterwards. Fast and in-process unless
marked slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def snapshot_tree(folder: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file under ``folder`` (the byte-for-byte check)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------ 3: user files are loaded without running code


class _RunsCode:
    """Unpickling this calls os.system: what a crafted --trajectories file did."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("flag", ["--trajectories", "--bank-cache"])
def test_train_world_clip_never_runs_code_from_a_user_file(tmp_path, capsys, flag):
    from evaluation.train_world_clip import main

    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"images": _RunsCode(marker), "seed": 0}, crafted)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "out"), flag, str(crafted), "--steps", "1"])
    assert exc.value.code == 2
    assert "no code is loaded" in one_error_line(capsys)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_train_world_clip_reads_its_own_files(tmp_path):
    from evaluation.train_world_clip import BANK_KEYS, load_tensor_file

    path = tmp_path / "bank.pt"
    state = torch.Generator().manual_seed(3).get_state()
    data = {"seed": 0, "views": 2, "version": "3", "bank": {"true": torch.ones(2, 3)}}
    data.update(generator=state, names=["a", "b"])
    torch.save(data, path)
    back = load_tensor_file(path, "--bank-cache", BANK_KEYS)
    assert back["names"] == ["a", "b"] and torch.equal(back["bank"]["true"], torch.ones(2, 3))


# ------------------------------------------------- 10: train_world_clip checks arguments


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--steps", "0"], "--steps >= 1"),
        (["--views", "-3"], "--views >= 1"),
        (["--threads", "0"], "--threads >= 1"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "-1"], "--lr"),
        (["--per-batch-trajectory", "-1"], "--per-batch-trajectory"),
        (["--init", "{tmp}"], "model.safetensors"),
        (["--recheck", "note"], "--recheck"),
        (["--bank-cache", "{tmp}/no/such/bank.pt"], "--bank-cache"),
        (["--trajectories", "{tmp}/junk.pt"], "--trajectories"),
    ],
)
def test_train_world_clip_bad_arguments_are_one_line(tmp_path, capsys, argv, needle):
    from evaluation.train_world_clip import main

    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_train_world_clip_out_naming_a_file_is_refused_untouched(tmp_path, capsys):
    from evaluation.train_world_clip import main

    out = tmp_path / "out"
    out.write_bytes(b"precious")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out)])
    assert exc.value.code == 2 and "not a folder" in one_error_line(capsys)
    assert out.read_bytes() == b"precious"


# --------------------------------------------------------- 9: sdi.t_start=1 ran off the end


@pytest.mark.parametrize("t_start", [1.0, 0.9995])
def test_sdi_t_start_one_stays_inside_the_schedule(t_start):
    from estimators import EstimatorContext
    from estimators.sdi import SDI, SDIConfig
    from tests.fakes import LinearPrior

    prior = LinearPrior()
    est = SDI(SDIConfig(t_start=t_start, t_end=0.25))
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ctx = EstimatorContext(prompt="p", cameras=None, step=0, generator=torch.Generator())
    out = est.grad(x, torch.tensor([500]), torch.zeros_like(x), prior, ctx)
    assert out.diagnostics["t_used"] == 999.0
    assert bool(torch.isfinite(out.grad).all())
