"""Does the shipped world CLIP rank assets like the exact metrics?

Claims checked on the shipped weights (evaluation/assets/world_clip), on the held-out ring
(elevation 20, 8 azimuths), which CLIP training never sees (evaluation/clip_data.py excludes
the band 14..26 deg):
- the ladder, for every one of the 12 prompts: mean score of the true object > mean over its
  partial shapes (parts removed, plane cuts; those the exact metrics place above the blob:
  ``partial_validity``), and true > the worse of the two colour-matched blobs (an oblate
  ellipsoid in its part colours, and in its mean colour) > a blank image; partial > blob
  holds for 11 of 12 prompts: NOT for "a toy car" (strict xfail), so the gate fails and the
  report keeps CLIP out of the quality columns;
- on the committed held-out snapshots of training runs (SDS at two world temperatures, VSD,
  SSD, a Gaussian-splat SDS; evaluation/assets/world_clip/snapshots.npz), within a prompt the
  score rank-correlates with PSNR and with mask IoU: median over prompts of Spearman's rho
  >= 0.6 for both (scipy.stats.spearmanr), and no prompt below 0;
- provenance.json records these figures and the gate, as recomputed here.
The hard negatives (evaluation/clip_negatives.py) and the report's gate (analysis/clip_gate.py)
have exact unit checks below.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from evaluation.clip import WORLD_CLIP_DIR, load_clip_scorer, summarize_checks
from evaluation.clip_checks import (
    MIN_MEDIAN_RHO,
    gate,
    ladder,
    ladder_images,
    snapshot_correlations,
)
from evaluation.clip_data import with_albedo
from evaluation.clip_negatives import (
    CutObject,
    morph_object,
    painted_as,
    partial_objects,
    solid_colour,
    white_object,
)
from evaluation.clip_snapshots import SNAPSHOTS, load_snapshots
from world.objects import OBJECTS, known_prompts
from world.renderer import render_object

LADDER_LEVELS = ("true", "partial", "blob", "blank")
#: prompts where the shipped CLIP scores a colour-matched blob at or above the partial shapes
#: (strict xfail: a retrained CLIP that fixes one makes the test fail until it is removed)
KNOWN_BLOB_ABOVE_PARTIAL = ("a toy car",)
#: the shipped CLIP's median rho with mask IoU misses MIN_MEDIAN_RHO (docs/world_clip.md)
IOU_MEDIAN_MET = True


@pytest.fixture(scope="module")
def world_clip():
    return load_clip_scorer("world")


@pytest.fixture(scope="module")
def ladder_result(world_clip):
    banks = {p: ladder_images(p, levels=LADDER_LEVELS) for p in known_prompts()}
    return ladder(world_clip, banks=banks)


@pytest.fixture(scope="module")
def correlations(world_clip):
    return snapshot_correlations(world_clip, load_snapshots(SNAPSHOTS))


def test_ladder_true_above_partial_and_blob_above_blank_for_every_prompt(ladder_result):
    assert set(ladder_result) == set(known_prompts())
    for prompt, row in ladder_result.items():
        assert row["true"] > row["partial"], (prompt, row)
        assert row["true"] > row["blob"] > row["blank"], (prompt, row)


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="blob >= partial"))
        if p in KNOWN_BLOB_ABOVE_PARTIAL
        else p
        for p in known_prompts()
    ],
)
def test_ladder_partial_above_blob(ladder_result, prompt):
    row = ladder_result[prompt]
    assert row["partial"] > row["blob"], row


def test_score_rank_correlates_with_psnr_within_prompts(correlations):
    rows = correlations["per_prompt"]
    assert len(rows) == 12 and all(r["n"] >= 20 for r in rows.values())
    rhos = [r["rho_psnr"] for r in rows.values()]
    assert statistics.median(rhos) >= MIN_MEDIAN_RHO, rhos
    assert min(rhos) >= 0.0, rhos


@pytest.mark.xfail(not IOU_MEDIAN_MET, strict=True, reason="median rho with IoU < 0.6")
def test_score_rank_correlates_with_mask_iou_within_prompts(correlations):
    rhos = [r["rho_mask_iou"] for r in correlations["per_prompt"].values()]
    assert min(rhos) >= 0.0, rhos
    assert statistics.median(rhos) >= MIN_MEDIAN_RHO, rhos


def test_the_shipped_clip_is_gated_out_of_quality_when_a_check_fails(world_clip):
    """The gate as the report applies it: the shipped CLIP's recorded checks decide."""
    from analysis.clip_gate import clip_gate
    from results.catalogue import lookup

    checks = world_clip.checks
    gate_now = clip_gate([{"clip": {"name": "world", "checks": checks}}])
    assert gate_now.quality == checks["passed"]
    if not checks["passed"]:
        assert checks["reasons"] and "NOT a quality measure" in gate_now.note
        assert lookup("clip_score").kind == "diagnostic"


def test_provenance_records_the_checks(world_clip, ladder_result, correlations):
    provenance = json.loads((WORLD_CLIP_DIR / "provenance.json").read_text(encoding="utf-8"))
    metrics = provenance["metrics"]
    recorded = summarize_checks(metrics)
    assert world_clip.checks == recorded
    assert recorded["passed"] == gate(ladder_result, correlations)["passed"]
    for key in ("median_rho_psnr", "median_rho_mask_iou"):
        assert abs(recorded[key] - correlations[key]) < 0.02, key
    for prompt, row in ladder_result.items():
        for level in LADDER_LEVELS:
            assert abs(metrics["ladder"][prompt][level] - row[level]) < 0.5, (prompt, level)


def test_snapshot_data_is_held_out_and_labelled():
    data = load_snapshots(SNAPSHOTS)
    n, v = data["images"].shape[:2]
    assert v == 8 and data["images"].shape[2:] == (3, 32, 32)
    assert len(data["psnr"]) == len(data["mask_iou"]) == len(data["source"]) == n
    assert data["prompts"] == known_prompts()
    methods = {s.split("/")[1] for s in data["source"]}
    assert {"sds", "vsd", "ssd"} <= methods


# ------------------------------------------------------------------- hard negatives, exactly


def _cams(n: int = 2):
    from evaluation.clip_data import training_cameras

    return training_cameras(n, torch.Generator().manual_seed(3))


def test_morph_end_points_are_the_object_and_the_blob():
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    obj = OBJECTS["a chair"]
    torch.testing.assert_close(morph_object("a chair", 1.0).sdf(points), obj.sdf(points))
    blob = morph_object("a chair", 0.0, radii=(0.5, 0.5, 0.5)).sdf(points)
    torch.testing.assert_close(blob, points.norm(dim=-1) - 0.5, atol=1e-5, rtol=0)
    _, albedo = morph_object("a chair", 0.3).sdf_and_albedo(points)
    torch.testing.assert_close(albedo, obj.sdf_and_albedo(points)[1])


def test_partials_are_subsets_of_the_object():
    points = torch.rand(2000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for prompt in known_prompts():
        inside = OBJECTS[prompt].sdf(points) < 0
        variants = partial_objects(prompt)
        assert len(variants) >= 3
        for part in variants:
            sub = part.sdf(points) < 0
            assert not bool((sub & ~inside).any()), prompt
            assert 0 < int(sub.sum()) < int(inside.sum()), prompt
    cut = CutObject(OBJECTS["a red sphere"], (0.0, 0.0, 1.0), 0.0)
    assert float(cut.sdf(torch.tensor([[0.0, 0.0, -0.3]]))) > 0


def test_solid_colour_is_the_render_in_that_colour():
    """Shading is linear in the albedo: c * (white render - background) + background."""
    cams = _cams()
    white = render_object(white_object(OBJECTS["a snowman"]), cams, 16, 16, supersample=1)
    c = (0.2, 0.5, 0.9)
    recoloured = solid_colour(white["rgb"], white["mask"], torch.tensor(c))
    direct = render_object(with_albedo(OBJECTS["a snowman"], c, None), cams, 16, 16, supersample=1)
    torch.testing.assert_close(recoloured, direct["rgb"], atol=1e-5, rtol=0)


def test_painted_as_takes_the_other_objects_colours():
    car = painted_as(OBJECTS["a chair"], OBJECTS["a toy car"])
    colours = {p.albedo for p in OBJECTS["a toy car"].parts}
    assert all(p.albedo in colours for p in car.parts)
    assert [p.sdf for p in car.parts] == [p.sdf for p in OBJECTS["a chair"].parts]


def test_partial_level_holds_the_variants_the_exact_metrics_place_above_the_blob():
    """The ladder's partial level is what the exact metrics call partial: every variant it
    averages has PSNR and mask IoU against the true render above the blob's (held-out ring),
    every prompt keeps at least two, and the mushroom's bare stem (below the blob by both
    metrics) is left out."""
    from evaluation.clip_checks import partial_validity

    for prompt in known_prompts():
        v = partial_validity(prompt)
        assert len(v["valid"]) >= 2, (prompt, v)
        for i in range(len(partial_objects(prompt))):
            above = v["psnr"][i] > v["blob_psnr"] and v["iou"][i] > v["blob_iou"]
            assert above == (i in v["valid"]), (prompt, i, v)
    stem = partial_validity("a red mushroom")
    assert 1 not in stem["valid"] and stem["psnr"][1] < stem["blob_psnr"] - 5


def test_exact_grades_rank_like_psnr_and_iou():
    """Each object's true render grades 1 for its own prompt and below 1 for the others;
    a blurred copy grades below the render and above a blob in its colours."""
    from evaluation.clip_bank import exact_grades
    from evaluation.clip_negatives import blur, morph_object

    cams = _cams(2)
    prompts = ["a red mushroom", "a toy car"]
    r = [render_object(OBJECTS[p], cams, 32, 32) for p in prompts]
    bank = {"true": torch.stack([x["rgb"] for x in r]), "mask": torch.stack([x["mask"] for x in r])}
    blob = render_object(morph_object("a toy car", 0.0, (0.6, 0.6, 0.3)), cams, 32, 32)
    images = torch.cat([bank["true"][0], bank["true"][1], blur(bank["true"][1], 2), blob["rgb"]])
    masks = torch.cat([bank["mask"][0], bank["mask"][1], bank["mask"][1], blob["mask"]])
    view = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    g = exact_grades(images, masks, view, bank)
    torch.testing.assert_close(g[0:2, 0], torch.ones(2))
    torch.testing.assert_close(g[2:4, 1], torch.ones(2))
    assert bool((g[:2, 1] < 1).all()) and bool((g[2:4, 0] < 1).all())
    assert bool((g[4:6, 1] < 1).all()) and bool((g[4:6, 1] > g[6:8, 1]).all())
    assert torch.equal(exact_grades(images, masks, torch.full((8,), -1), bank), torch.zeros(8, 2))


# ------------------------------------------------------------------------------ the gate


def test_gate_requires_every_margin_and_the_median_rho():
    good = {"a": {"margin_true_partial": 5.0, "margin_partial_blob": 3.0}}
    corr = {
        "median_rho_psnr": 0.7,
        "median_rho_mask_iou": 0.65,
        "min_rho_psnr": 0.1,
        "min_rho_mask_iou": 0.0,
    }
    assert gate(good, corr)["passed"]
    bad = {"a": {"margin_true_partial": 5.0, "margin_partial_blob": -1.0}}
    assert not gate(bad, corr)["passed"]
    assert not gate(good, dict(corr, median_rho_psnr=0.5))["passed"]
    assert not gate(good, None)["passed"]


def test_report_and_verdict_follow_the_gate():
    import pandas as pd

    from analysis.clip_gate import clip_gate, gate_for
    from analysis.verdict import method_table

    checks = {"passed": False, "reasons": ["median rho_psnr = 0.19 < 0.6"], "median_rho_psnr": 0.19}
    failed = clip_gate([{"clip": {"name": "world", "checks": checks}}])
    assert not failed.quality and "NOT a quality measure" in failed.note and "0.19" in failed.note
    passed = clip_gate([{"clip": {"name": "world", "checks": dict(checks, passed=True)}}])
    assert passed.quality and "passed" in passed.note
    rows = [
        dict(run_id="r", method=m, prompt="a red sphere", seed=0, step=s, metric=k, value=v)
        for m in ("sds", "vsd")
        for s in (0, 10)
        for k, v in (("psnr", 12.0 + s), ("clip_score", 10.0 + s), ("train_seconds", s + 1.0))
    ]
    df = pd.DataFrame(rows)
    assert gate_for(df, {"r": {}}) is not None and not gate_for(df, {"r": {}}).quality
    shown = method_table(
        df, {"r": {"clip": {"name": "world", "checks": dict(checks, passed=True)}}}
    )
    hidden = method_table(df, {"r": {"clip": {"name": "world", "checks": checks}}})
    assert "clip_score" in set(shown[0]["quantity"])
    assert "clip_score" not in set(hidden[0]["quantity"])
