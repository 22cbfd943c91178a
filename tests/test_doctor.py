"""``python -m benchmark doctor``: on a CPU machine it reports CUDA absent and exits 0; the
battery's items run (here on CPU, at small sizes) and report a median time each."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.cli import doctor
from tests.test_cli_errors import run_cli


def test_doctor_on_a_cpu_machine_exits_0_and_writes_json(tmp_path):
    out = tmp_path / "doctor.json"
    proc = run_cli("doctor", "--device", "cuda", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["versions"]["torch"]
    if not torch.cuda.is_available():
        assert report["cuda"]["available"] is False
        assert "not available" in report["battery"]["skipped"]
    assert set(report["optional_paths"]) == {"tinycudann", "gsplat", "nerfacc_cuda"}


def test_doctor_rejects_a_bad_device():
    proc = run_cli("doctor", "--device", "tpu")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")


@pytest.mark.slow
def test_battery_items_run_on_cpu_at_small_sizes():
    cpu = torch.device("cpu")
    tiny_unet = dict(
        doctor.SD21_UNET,
        sample_size=8,
        block_out_channels=(32, 64, 64, 64),
        attention_head_dim=(2, 2, 2, 2),
        cross_attention_dim=32,
        layers_per_block=1,
        norm_num_groups=16,
    )
    items = {
        "sd_unet_step": lambda d: doctor._sd_unet(d, tiny_unet),
        "hashgrid_step": lambda d: doctor._hashgrid(d, 16),
        "gaussians_step": lambda d: doctor._gaussians(d, 16),
        "variance_probe": lambda d: doctor._probe(d, 16),
        "occgrid_sampling": doctor._occgrid,  # CUDA only: reported as an error on CPU
    }
    report = doctor.run_battery(cpu, items)
    for name in ("sd_unet_step", "hashgrid_step", "gaussians_step", "variance_probe"):
        assert report[name]["median_s"] > 0, report[name]
    assert "error" in report["occgrid_sampling"]
