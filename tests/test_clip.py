"""The CLIP scorer (evaluation/clip.py) and the shipped world CLIP (evaluation/assets/world_clip).

Claims checked on the shipped weights, at the evaluator's held-out cameras (which training
never saw: evaluation/train_world_clip.py excludes the elevation band 14..26 deg):
- R-precision of the true objects' renders among the 12 world prompts >= 0.95;
- on null images (blank, constant colours, noise) the scorer is at chance: with labels
  cycling over the 12 prompts the R-precision lies within 3 binomial standard errors of
  1/12, and the model's posterior over the prompts (softmax at its own temperature) is nearly
  flat: mean largest probability <= MAX_NULL_PROBABILITY (uniform: 1/12 = 0.083; on the true
  renders it is near 1). NOT claimed: a spread-out argmax. The near-ties (cosines within ~0.03)
  are broken by a systematic bias, and about 2/3 of the argmaxes fall on "a blue cube";
- the ladder (true > partial > colour-matched blob > blank) and the rank correlation with the
  exact metrics are in tests/test_clip_ranking.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.run.config import RunConfig, load_config
from core.errors import ConfigError, UserError
from evaluation.clip import ClipScorer, load_clip_scorer
from evaluation.clip_spec import resolve_clip_spec
from evaluation.heldout import HeldOutEvaluator, held_out_cameras
from evaluation.train_world_clip import null_images, training_cameras
from world.objects import OBJECTS, known_prompts
from world.renderer import render_object

MAX_NULL_PROBABILITY = 0.15
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def world_clip() -> ClipScorer:
    return load_clip_scorer("world")


@pytest.fixture(scope="module")
def held_out_banks() -> dict[str, dict[str, torch.Tensor]]:
    cameras = held_out_cameras(RunConfig())
    return {p: render_object(OBJECTS[p], cameras, 32, 32) for p in known_prompts()}


def test_held_out_cameras_are_not_training_cameras():
    eval_elevation = RunConfig().eval.elevation
    train = training_cameras(4096, torch.Generator().manual_seed(0)).elevation
    assert float((train - eval_elevation).abs().min()) >= 6.0 - 1e-4


def test_world_r_precision_on_held_out_views(world_clip, held_out_banks):
    prompts = known_prompts()
    images = torch.cat([held_out_banks[p]["rgb"] for p in prompts])
    true = torch.arange(len(prompts)).repeat_interleave(len(images) // len(prompts))
    assert world_clip.r_precision(images, true, prompts) >= 0.95


def test_world_clip_at_chance_on_null_images(world_clip):
    prompts = known_prompts()
    n = 480
    images = null_images(n, 32, torch.Generator().manual_seed(7))
    true = torch.arange(n) % len(prompts)
    r = world_clip.r_precision(images, true, prompts)
    p = 1.0 / len(prompts)
    assert abs(r - p) <= 3.0 * math.sqrt(p * (1 - p) / n)
    scale = world_clip.model.logit_scale.exp()
    null_prob = (scale * world_clip.similarities(images, prompts)).softmax(-1).amax(-1)
    assert float(null_prob.mean()) <= MAX_NULL_PROBABILITY
    true_images = render_object(OBJECTS["a chair"], held_out_cameras(RunConfig()), 32, 32)
    true_prob = (scale * world_clip.similarities(true_images["rgb"], prompts)).softmax(-1)
    assert float(true_prob.amax(-1).mean()) > 0.5


def test_score_is_differentiable_and_resizes(world_clip):
    images = torch.rand(2, 3, 64, 48, requires_grad=True)
    score = world_clip.score(images, ["a red sphere", "a snowman"])
    assert score.shape == (2,) and bool((score.abs() <= 100.0).all())
    clamped = world_clip.score(images, ["a red sphere", "a snowman"], clamp=True)
    torch.testing.assert_close(clamped, score.clamp_min(0.0))
    world_clip.cosine(images, "a chair").sum().backward()
    assert images.grad is not None and bool(images.grad.abs().sum() > 0)


def _tiny_model(tmp_path):
    import open_clip

    config = tmp_path / "tiny_clip_test.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("tiny_clip_test", pretrained=None, load_weights=False)
    return config, model.eval(), open_clip.get_tokenizer("tiny_clip_test")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_user_checkpoint_round_trip(tmp_path, suffix):
    from safetensors.torch import save_file

    config, model, tokenizer = _tiny_model(tmp_path)
    weights = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    else:
        torch.save({"state_dict": model.state_dict()}, weights)
    loaded = load_clip_scorer(f"{config}:{weights}")
    direct = ClipScorer(model, tokenizer)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    prompts = ["a red sphere", "a chair", "a toy car"]
    torch.testing.assert_close(loaded.score(images, prompts), direct.score(images, prompts))
    torch.testing.assert_close(
        loaded.similarities(images, prompts), direct.similarities(images, prompts)
    )


def test_user_checkpoint_errors_are_one_line(tmp_path):
    config, model, _ = _tiny_model(tmp_path)
    cases = [
        f"{config}:{tmp_path / 'missing.safetensors'}",
        f"{tmp_path / 'missing.json'}:{tmp_path / 'w.safetensors'}",
        "NoSuchArch-1:/tmp/w.safetensors",
        "nonsense",
    ]
    other = dict(TINY, embed_dim=8)
    mismatched = tmp_path / "other_tiny_clip.json"
    mismatched.write_text(json.dumps(other))
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    cases.append(f"{mismatched}:{weights}")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    cases.append(f"{config}:{garbage}")
    for spec in cases:
        with pytest.raises(UserError) as info:
            load_clip_scorer(spec)
        assert "\n" not in str(info.value), spec


def test_eval_clip_config():
    assert load_config().eval.clip == "auto"
    assert resolve_clip_spec("auto", "world") == "world"
    assert resolve_clip_spec("auto", "sd") == "none"
    assert load_config(overrides=["eval.clip=ViT-B-32:/x.safetensors"]).eval.clip
    with pytest.raises(ConfigError):
        load_config(overrides=["eval.clip=bogus"])
    assert load_clip_scorer("none") is None


def test_evaluator_logs_clip_metrics(world_clip):
    from backbones.voxel import VoxelGrid

    config = load_config(overrides=["eval.n_views=4"])
    evaluator = HeldOutEvaluator("a red sphere", config, torch.device("cpu"), world_clip)
    metrics, _ = evaluator(VoxelGrid(config.voxel))
    assert -100.0 <= metrics["clip_score"] <= 100.0
    assert metrics["clip_r_precision"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert (
        "clip_score"
        not in HeldOutEvaluator("a red sphere", config, "cpu")(VoxelGrid(config.voxel))[0]
    )
