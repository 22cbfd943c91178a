"""Figures and numbers of docs/world_clip.md: the ladder and the rank correlation of a world
CLIP (and, with ``--before DIR``, of an older one beside it).

    python scripts/world_clip_figures.py [--clip DIR] [--before DIR] [--img docs/img]
        [--json OUT.json]

DIR holds world_clip.json + model.safetensors (default: the shipped
evaluation/assets/world_clip). Writes ``world_clip_ladder.png`` (per prompt, the mean score on
the held-out ring of the true object, early shapes, partial shapes, colour-matched blob,
wrong shape, grey blob, blank) and ``world_clip_spearman.png`` (per prompt, CLIP score against
held-out PSNR over the committed training snapshots, rho in the title) and prints (or writes)
the checks as JSON (evaluation/clip_checks.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVEL_STYLE = {
    "true": ("tab:green", "o"),
    "early": ("tab:olive", "^"),
    "partial": ("tab:blue", "s"),
    "blob": ("tab:orange", "D"),
    "wrong_shape": ("tab:purple", "v"),
    "grey": ("tab:gray", "x"),
    "blank": ("black", "."),
}


def scorer_of(folder: Path):
    from evaluation.clip import ClipScorer, build_open_clip

    model, tokenizer = build_open_clip(
        str(folder / "world_clip.json"), folder / "model.safetensors"
    )
    return ClipScorer(model, tokenizer)


def plot_ladder(results: dict[str, dict], path: Path) -> None:
    """results: name -> clip_checks.ladder output; one panel per CLIP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.2), squeeze=False)
    for ax, (name, lad) in zip(axes[0], results.items(), strict=True):
        prompts = list(lad)
        for level, (colour, marker) in LEVEL_STYLE.items():
            ax.plot(
                range(len(prompts)),
                [lad[p][level] for p in prompts],
                marker=marker,
                color=colour,
                linestyle="none",
                label=level,
            )
        ax.set_xticks(range(len(prompts)), [p.removeprefix("a ") for p in prompts], rotation=60)
        ax.set_ylabel("CLIP score (100 cos), mean over the held-out ring")
        ax.set_title(f"{name}: ladder on held-out cameras")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spearman(data: dict, scores: dict, corr: dict, path: Path) -> None:
    """Per prompt: score vs PSNR of each snapshot, one marker colour per CLIP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompts = data["prompts"]
    fig, axes = plt.subplots(3, 4, figsize=(16, 10.5))
    psnr = data["psnr"].numpy()
    index = data["prompt_index"].numpy()
    colours = ("tab:red", "tab:blue")
    for k, (ax, prompt) in enumerate(zip(axes.flat, prompts, strict=True)):
        sel = index == k
        title = [prompt]
        for (name, s), colour in zip(scores.items(), colours, strict=False):
            ax.scatter(psnr[sel], s.numpy()[sel], s=12, color=colour, alpha=0.7, label=name)
            rho = corr[name]["per_prompt"][prompt]
            title.append(f"{name}: rho {rho['rho_psnr']:.2f} / IoU {rho['rho_mask_iou']:.2f}")
        ax.set_title("\n".join(title), fontsize=8)
        ax.set_xlabel("held-out PSNR (dB)", fontsize=8)
        ax.set_ylabel("CLIP score", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import torch

    from evaluation.clip_checks import (
        gate,
        ladder,
        ladder_images,
        snapshot_correlations,
        snapshot_scores,
    )
    from evaluation.clip_snapshots import SNAPSHOTS, load_snapshots
    from world.objects import known_prompts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "evaluation/assets/world_clip")
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--img", type=Path, default=ROOT / "docs/img")
    parser.add_argument("--snapshots", type=Path, default=SNAPSHOTS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--names", default="before,after", help="labels of --before, --clip")
    parser.add_argument("--banks-cache", type=Path, default=None, help="torch file of renders")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    before_name, after_name = args.names.split(",")
    clips = {after_name: args.clip} if args.before is None else {before_name: args.before}
    if args.before is not None:
        clips[after_name] = args.clip
    if args.banks_cache is not None and args.banks_cache.is_file():
        banks = torch.load(args.banks_cache, weights_only=True)  # a user file: no code runs
    else:
        banks = {p: ladder_images(p) for p in known_prompts()}
        if args.banks_cache is not None:
            torch.save(banks, args.banks_cache)
    data = load_snapshots(args.snapshots)
    out, ladders, scores, corrs = {}, {}, {}, {}
    for name, folder in clips.items():
        scorer = scorer_of(folder)
        ladders[name] = ladder(scorer, banks=banks)
        scores[name] = snapshot_scores(scorer, data)
        corrs[name] = snapshot_correlations(scorer, data)
        out[name] = {
            "ladder": ladders[name],
            "correlations": corrs[name],
            "gate": gate(ladders[name], corrs[name]),
        }
    args.img.mkdir(parents=True, exist_ok=True)
    plot_ladder(ladders, args.img / "world_clip_ladder.png")
    plot_spearman(data, scores, corrs, args.img / "world_clip_spearman.png")
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
