"""The world CLIP's run-trajectory data (benchmark/clip_trajectories.py): real training
renders at training cameras, graded exactly against every prompt's true render."""

from __future__ import annotations

import torch

from benchmark.clip_trajectories import trajectories
from evaluation.clip_bank import exact_grades
from evaluation.clip_data import HELD_OUT_BAND, HELD_OUT_ELEVATION, training_cameras
from world.objects import OBJECTS, known_prompts
from world.renderer import render_object

SMALL = (
    "voxel.resolution=16",
    "voxel.n_samples=24",
    "world.n_azimuth=8",
    "world.elevations=[0,30]",
)


def test_trajectory_renders_are_graded_against_every_prompt_at_their_cameras():
    data = trajectories(["sds"], 2, [0, 2], 2, seed=5, threads=1, trained=["a chair"],
                        overrides=SMALL)  # fmt: skip
    n, v = data["images"].shape[:2]
    assert (n, v) == (2, 2) and data["step"].tolist() == [0, 2]
    assert data["grades"].shape == (2, 2, len(known_prompts()))
    assert data["prompt_index"].tolist() == [known_prompts().index("a chair")] * 2
    # the grades are exact_grades of the stored renders against the true renders
    cams = training_cameras(2, torch.Generator().manual_seed(5))
    truth = [render_object(OBJECTS[p], cams, 32, 32) for p in known_prompts()]
    bank = {"true": torch.stack([t["rgb"] for t in truth]),
            "mask": torch.stack([t["mask"] for t in truth])}  # fmt: skip
    images = data["images"][1].float() / 255
    again = exact_grades(images, data["masks"][1].float(), torch.arange(2), bank)
    torch.testing.assert_close(again, data["grades"][1], atol=0.02, rtol=0)
    assert not torch.equal(data["images"][0], data["images"][1])  # training moved theta


def test_training_cameras_avoid_the_held_out_band():
    cams = training_cameras(400, torch.Generator().manual_seed(0))
    elevation = torch.rad2deg(torch.asin(cams.c2w[:, 2, 3] / cams.c2w[:, :3, 3].norm(dim=-1)))
    assert bool(((elevation - HELD_OUT_ELEVATION).abs() >= HELD_OUT_BAND - 1e-3).all())


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    from benchmark.clip_trajectories import main

    for argv in (
        ["--methods", "bogus"],
        ["--at", "0,500"],
        ["--at", "x"],
        ["--out", str(tmp_path / "missing" / "t.pt")],
    ):
        full = ["--out", str(tmp_path / "t.pt"), *argv] if argv[0] != "--out" else argv
        assert main(full) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "t.pt").exists()
