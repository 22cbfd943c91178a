"""Real scale (docs/scale.md): the full-size fixture architectures, SSD's phi decoder
levers, the memory levers (text encoder dropped, LoRA sharing the UNet's weights), the probe's
``split`` engine on a latent prior, and ``scale_check`` on the tiny fixtures.

The full-size ``make scale-check`` itself is ``test_scale_check_full_size``: slow, skipped
unless STEINBENCH_SCALE_CHECK=1 (it needs ~13 GB free and ~15 min on 2 CPU threads).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from benchmark.probe import PerSampleGradients, draw_measure_inputs
from benchmark.run.config import load_config
from benchmark.run.factories import build_estimator, build_prior
from benchmark.run.trainer import CellTrainer
from core.cameras import look_at_origin
from core.errors import UserError
from estimators.base import EstimatorContext

CPU = torch.device("cpu")
PROMPT = "a red sphere"
SMALL = ["measure.every=0", "eval.every=1000", "voxel.resolution=8", "voxel.n_samples=16"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    from priors.fixtures import make_fixtures

    root = tmp_path_factory.mktemp("fx")
    make_fixtures(root, ["sd"])
    return root


def _config(root: Path, *overrides: str, methods=("sds", "vsd", "ssd")):
    return load_config(None, [*SMALL, *overrides], prior=f"sd:{root / 'sd'}", methods=methods)


def _cameras(n: int = 2):
    ones = torch.ones(n)
    return look_at_origin(ones * 20.0, torch.linspace(0.0, 90.0, n), ones * 2.5, ones * 40.0)


def test_full_size_architectures_have_the_real_sizes():
    """Parameter counts of the configs make-fixtures --full-size writes (built on meta)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTConfig, DPTForDepthEstimation

    from priors import fixtures_full as ff

    def millions(factory) -> float:
        with torch.device("meta"):
            return sum(p.numel() for p in factory().parameters()) / 1e6

    assert millions(lambda: UNet2DConditionModel(**ff.SD21_UNET)) == pytest.approx(865.9, abs=1)
    assert millions(lambda: AutoencoderKL(**ff.SD21_VAE)) == pytest.approx(83.7, abs=1)
    text = millions(lambda: CLIPTextModel(CLIPTextConfig(**ff.SD21_TEXT)))
    assert text == pytest.approx(340.4, abs=1)
    dpt = millions(lambda: DPTForDepthEstimation(DPTConfig(**ff.DPT_HYBRID)))
    assert dpt == pytest.approx(122.4, abs=1)
    assert millions(lambda: AutoencoderTiny(**ff.TAESD)) == pytest.approx(2.4, abs=0.2)


def test_tiny_fixture_has_a_tiny_decoder_and_ssd_uses_it(fixtures):
    prior = build_prior(_config(fixtures), [PROMPT], CPU)
    geometry = prior.geometry_estimator("")
    assert geometry.decoder.kind == "tiny" and geometry.decoder.resolution == 64
    full = build_prior(_config(fixtures, "sd.phi_decoder=full"), [PROMPT], CPU)
    assert full.geometry_estimator("").decoder.kind == "full"
    x_t = torch.randn(2, 4, 8, 8, requires_grad=True)
    ctx = EstimatorContext(
        prompt=PROMPT, cameras=_cameras(), render={"depth": torch.rand(2, 1, 16, 16)}
    )
    t = torch.tensor([10, 500])
    for g in (geometry, full.geometry_estimator("")):
        depth = g.depth(x_t, t, ctx)
        assert depth.shape == (2, 1, 16, 16) and torch.isfinite(depth).all()
        (grad,) = torch.autograd.grad(depth.sum(), x_t)
        assert grad.abs().sum() > 0
    assert not torch.allclose(
        geometry.depth(x_t, t, ctx), full.geometry_estimator("").depth(x_t, t, ctx)
    )


def test_phi_resolution_resizes_the_latent_before_decoding(fixtures):
    prior = build_prior(_config(fixtures, "sd.phi_resolution=32"), [PROMPT], CPU)
    decoder = prior.geometry_estimator("").decoder
    image = decoder(torch.randn(1, 4, 8, 8))
    assert image.shape == (1, 3, 32, 32) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_dpt_runs_at_the_decoded_side_when_it_is_below_its_native_size(fixtures):
    """depth_resolution 0: the processor's size (32 in the fixture), capped at the phi
    decoder's side, so a 16-px decode is not upsampled; an explicit side wins."""
    for sets, want in ((["sd.phi_resolution=16"], 16), ([], 32), (["sd.depth_resolution=24"], 24)):
        prior = build_prior(_config(fixtures, *sets), [PROMPT], CPU)
        assert prior.geometry_estimator("").size == (want, want), sets


def test_without_taesd_the_full_decoder_runs_at_phi_resolution_full_and_says_so(
    fixtures, tmp_path, capsys
):
    """auto without PATH/taesd: the full VAE decoder at sd.phi_resolution_full, and one
    stderr line naming the TAESD lever (once per prior); with TAESD neither happens."""
    sd = tmp_path / "sd"
    sd.mkdir()
    for child in (fixtures / "sd").iterdir():
        if child.name != "taesd":
            (sd / child.name).symlink_to(child)
    config = load_config(
        None, [*SMALL, "sd.phi_resolution_full=16"], prior=f"sd:{sd}", methods=("ssd",)
    )
    capsys.readouterr()
    prior = build_prior(config, [PROMPT], CPU)
    decoder = prior.geometry_estimator("").decoder
    prior.geometry_estimator("")  # loaded once: no second line
    assert decoder.kind == "full" and decoder.fallback and decoder.resolution == 16
    assert decoder(torch.randn(1, *prior.shape)).shape == (1, 3, 16, 16)
    notes = [line for line in capsys.readouterr().err.splitlines() if "TAESD" in line]
    assert len(notes) == 1 and str(sd / "taesd") in notes[0] and "sd.tiny_decoder" in notes[0]
    tiny = build_prior(_config(fixtures, "sd.phi_resolution_full=16"), [PROMPT], CPU)
    decoder = tiny.geometry_estimator("").decoder
    assert decoder.kind == "tiny" and not decoder.fallback
    assert decoder.resolution == tiny.resolution > 16  # the VAE's side (phi_resolution caps)
    assert "TAESD" not in capsys.readouterr().err


def test_missing_tiny_decoder_is_a_user_error(fixtures, tmp_path):
    config = _config(fixtures, "sd.phi_decoder=tiny", f"sd.tiny_decoder={tmp_path / 'none'}")
    with pytest.raises(UserError, match="AutoencoderTiny"):
        build_prior(config, [PROMPT], CPU)


@pytest.mark.parametrize("decoder", ["tiny", "full"])
def test_ssd_steps_with_each_phi_decoder_are_finite(fixtures, decoder):
    config = _config(fixtures, f"sd.phi_decoder={decoder}", methods=("ssd",))
    prior = build_prior(config, [PROMPT], CPU)
    trainer = CellTrainer(config, "ssd", PROMPT, 0, prior, CPU)
    for step in range(2):
        out = trainer.step(step)
        assert torch.isfinite(out.grad).all() and out.diagnostics["cv_norm"] > 0


def test_text_encoder_is_dropped_and_reloaded_on_demand(fixtures):
    kept = build_prior(_config(fixtures, "sd.free_text_encoder=false"), [PROMPT], CPU)
    freed = build_prior(_config(fixtures), [PROMPT], CPU)
    assert freed.text_encoder is None and kept.text_encoder is not None
    for text in ("", PROMPT + ", side view"):
        assert torch.equal(freed._embeddings[text], kept.text_embedding(text))
    assert freed.text_encoder is None
    new = freed.text_embedding("a blue cube")  # not cached: the encoder comes back
    assert freed.text_encoder is not None and torch.equal(new, kept.text_embedding("a blue cube"))


def test_lora_copy_shares_the_frozen_unet_weights(fixtures):
    config = _config(fixtures, methods=("vsd",))
    prior = build_prior(config, [PROMPT], CPU)
    vsd = build_estimator("vsd", config, prior, torch.Generator().manual_seed(0), CPU)
    base = {p.data_ptr() for p in prior.unet.parameters()}
    frozen = [p for p in vsd.model.unet.parameters() if not p.requires_grad]
    assert frozen and all(p.data_ptr() in base for p in frozen)
    assert not any(".lora_" in n for n, _ in prior.unet.named_parameters())
    assert prior.unet.class_embedding is None and vsd.model.unet.class_embedding is not None


@pytest.mark.parametrize("method", ["sds", "ssd"])
@pytest.mark.parametrize("variant", ["all", "fixed_camera"])
def test_split_engine_matches_autograd_on_the_latent_prior(fixtures, method, variant):
    """The probe's default engine on an SD prior is ``split`` (no vmap through the VAE) and
    gives the per-sample G, g (and raw A, a) of plain autograd within 1e-4 relative."""
    config = _config(fixtures, "render.height=16", "render.width=16", methods=(method,))
    prior = build_prior(config, [PROMPT], CPU)
    trainer = CellTrainer(config, method, PROMPT, 0, prior, CPU)
    trainer.step(0)
    trainer.step(1)
    subject = trainer.probe_subject()
    draws = draw_measure_inputs(subject, 2, 3).variant(variant)
    split = PerSampleGradients(subject, 2, engine="auto", raw=True)
    assert split.engine == "split"
    reference = PerSampleGradients(subject, 2, engine="autograd", raw=True)
    got, want = split(draws), reference(draws)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-12


def test_scale_check_runs_a_cell_on_the_tiny_fixture(fixtures, tmp_path):
    from benchmark.checks.scale_check import format_table, run_method

    row = run_method(fixtures / "sd", "ssd", 2, 1, ["voxel.resolution=8"], 2, tmp_path)
    assert "error" not in row, row.get("error")
    assert row["s_per_step"] > 0 and len(row["step_seconds"]) == 2
    assert row["peak_rss_gb"] > 0 and row["probe_s_per_sample"] > 0
    assert {"encode", "estimator", "prior"} <= set(row["sections"])
    # the convergence signals are logged at the last step's evaluation and printed
    # (signal_ratio is NaN until stop.window steps: its start is the first window's average)
    assert all(math.isfinite(row["conv"][k]) for k in ("signal_sq", "agreement", "render_change"))
    table = format_table([row])
    assert "ssd" in table and "conv/* at the last step: " in table and "agreement=" in table


def test_scale_check_without_taesd_shows_the_fallback_note(fixtures, tmp_path):
    from benchmark.checks.scale_check import format_table, run_method, target_lines, without_taesd

    bare = without_taesd(fixtures / "sd")
    assert not (bare / "taesd").exists() and (bare / "vae").is_dir()
    assert without_taesd(fixtures / "sd") == bare  # idempotent
    row = run_method(bare, "ssd", 1, 1, ["voxel.resolution=8"], 0, tmp_path)
    assert "error" not in row, row.get("error")
    assert len(row["notes"]) == 1 and "TAESD" in row["notes"][0]
    table = format_table([row], taesd=False)
    assert row["notes"][0] in table.splitlines()
    sds = {"method": "sds", "s_per_step": 40.0, "peak_rss_gb": 8.8}
    ssd = {"method": "ssd", "s_per_step": 56.0, "peak_rss_gb": 9.0}
    (line, _) = target_lines([sds, ssd], taesd=False)
    assert line == "target SSD <= 1.5x SDS per step without TAESD: 1.40x, met"


def test_scale_check_states_its_targets():
    from benchmark.checks.scale_check import target_lines

    rows = [
        {"method": "sds", "s_per_step": 40.0, "peak_rss_gb": 8.8},
        {"method": "ssd", "s_per_step": 56.0, "peak_rss_gb": 12.5},
    ]
    assert target_lines(rows) == [
        "target SSD <= 1.3x SDS per step: 1.40x, NOT met",
        "target peak RSS <= 12 GB per cell: max 12.5 GB (ssd), NOT met",
    ]
    rows[1].update(s_per_step=46.0, peak_rss_gb=9.5)
    assert [line.rsplit(", ", 1)[1] for line in target_lines(rows)] == ["met", "met"]


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("STEINBENCH_SCALE_CHECK") != "1",
    reason="full-size scale check: set STEINBENCH_SCALE_CHECK=1 (~13 GB free, ~15 min)",
)
def test_scale_check_full_size(tmp_path):
    """``make scale-check``: SSD within 1.3x SDS per step, every cell's peak RSS <= 12 GB."""
    from benchmark.checks.scale_check import DEFAULT_DIR, main

    out = tmp_path / "scale.json"
    assert main(["--dir", str(DEFAULT_DIR.expanduser()), "--out", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"sds", "vsd", "ssd"}
    assert rows["ssd"]["s_per_step"] <= 1.3 * rows["sds"]["s_per_step"]
    assert all(r["peak_rss_gb"] <= 12.0 for r in rows.values())
