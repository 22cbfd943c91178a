"""``make scale-check`` / ``python -m benchmark.checks.scale_check``: step time and peak memory of
SDS, VSD and SSD on the full-size random-weight SD 2.1-base (+ DPT-hybrid, TAESD).

Builds ``DIR/sd`` with ``make-fixtures --full-size`` when it is absent, then runs each method
as its own ``benchmark run`` process (one cell: one prompt, one seed, ``--steps`` steps,
no probe unless ``--probe K``), so a cell's peak RSS is its process's high-water mark
(``mem/peak_rss_mb``, ru_maxrss). From the run's metrics.parquet, per method:

    s_per_step     median over steps >= 2 of the per-step train seconds (step 1 alone when
                   --steps 1); step_seconds lists every step (step 1 includes warm-up)
    cpu_s_per_step the same in process CPU seconds (``time/cpu_step``, all threads): the
                   figure to compare on a machine other processes load
    sections       time/<section> seconds of the last step (render, encode, prior, estimator,
                   backward, optimizer)
    peak_rss_gb    the cell process's peak resident memory
    ratio_to_sds   s_per_step / SDS's s_per_step (cpu_ratio_to_sds: the same in CPU seconds)
    probe          with --probe K: var/seconds / K per sample and its ratio to s_per_step
    conv           the ground-truth-free convergence signals ``conv/*`` of the evaluation
                   at the last step (benchmark/run/convergence.py: signal_sq, agreement,
                   render_change, ...), printed under the table. With two steps they rest
                   on one pair of consecutive gradients (signal_ratio is NaN until
                   ``stop.window`` steps): the check shows that they are computed and finite
                   at full size, not a convergence state.

``--without-taesd`` runs on DIR/sd without its taesd/ (as Stable Diffusion is downloaded):
SSD's phi then decodes with the full VAE decoder at ``sd.phi_resolution_full``, the run prints
a ``note:`` line naming the TAESD lever (shown under the table), and the SSD target is 1.5x SDS.

Printed as a table and written as JSON (``--out``, rewritten after every method). Every
argument is checked first; an existing ``DIR/sd`` that is not the full-size fixture (a real
SD download) is refused, never replaced. Cells run one after another, never two
at once; each waits until ``--min-available-gb`` of memory is available (checked by psutil)
and refuses to start otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.errors import UserError, printable_line

DEFAULT_DIR = Path(os.environ.get("STEINBENCH_SCALE_DIR", "~/.cache/steinbench/full-size"))


def is_full_size_fixture(sd: Path) -> bool:
    """True when ``sd`` is a complete full-size fixture (model_index.json and taesd/)."""
    return (sd / "model_index.json").is_file() and (sd / "taesd").is_dir()


def check_fixture_dir(root: Path) -> Path:
    """ROOT/sd when it is a complete full-size fixture or absent (then built later); anything
    else there (a real SD download has no taesd/, a killed build, a file) is a UserError and
    is left untouched: this check never deletes what it did not build."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--dir {root} is not a folder")
    sd = root / "sd"
    if (sd.exists() or sd.is_symlink()) and not is_full_size_fixture(sd):
        raise UserError(
            f"{sd} exists and is not the full-size fixture (no model_index.json or taesd/); "
            "it was left untouched: give --dir an empty or new folder"
        )
    return sd


def ensure_full_size(root: Path) -> Path:
    """ROOT/sd, built (like ``make-fixtures --full-size ROOT``) when absent: into a temp
    folder beside it, renamed to ROOT/sd once complete, so a killed build leaves no
    half-built ROOT/sd. An existing ROOT/sd that is not the fixture is refused untouched."""
    import shutil

    sd = check_fixture_dir(root)
    if sd.exists():
        return sd
    from priors.fixtures_full import build_full_size
    from priors.weights import quiet_loading

    print(f"building full-size fixtures in {root} (about a minute)", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".sd.building-{os.getpid()}"
    try:
        with quiet_loading():
            build_full_size(building)
        building.rename(sd)
    finally:
        shutil.rmtree(building, ignore_errors=True)  # only our own temp folder
    return sd


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Every argument checked before anything is built, deleted or run; the methods to run.
    A bad one is a UserError (one line, exit 2)."""
    import math

    from benchmark.run.config import load_config
    from benchmark.run.factories import validate_methods

    methods = validate_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    for name in ("steps", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.probe < 0:
        raise UserError(f"--probe must be 0 or more, got {args.probe}")
    if not math.isfinite(args.min_available_gb) or args.min_available_gb < 0:
        raise UserError(f"--min-available-gb must be a number >= 0, got {args.min_available_gb}")
    load_config(None, list(args.overrides))  # a bad --set is a ConfigError (a UserError)
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a JSON file name")
    if not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: folder {args.out.parent} does not exist")
    if args.work is not None and args.work.exists() and not args.work.is_dir():
        raise UserError(f"--work {args.work} is not a folder")
    check_fixture_dir(args.dir.expanduser())
    return methods


def write_report(out: Path, report: dict) -> None:
    """``out`` rewritten atomically (after every method: a later crash keeps the rows)."""
    from results.atomic import atomic_write_text

    try:
        atomic_write_text(out, json.dumps(report, indent=2))
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def without_taesd(sd: Path) -> Path:
    """SD_PARENT/sd-without-taesd: symlinks to every entry of ``sd`` but ``taesd/``, i.e. SD
    as a Stable Diffusion download lays it out, so SSD's phi falls back to the full VAE
    decoder (``sd.phi_decoder=auto``)."""
    bare = sd.parent / f"{sd.name}-without-taesd"
    bare.mkdir(exist_ok=True)
    for child in sd.iterdir():
        link = bare / child.name
        if child.name != "taesd" and not link.exists():
            link.symlink_to(child.resolve())
    return bare


def _available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def run_method(
    sd: Path, method: str, steps: int, threads: int, overrides: list[str], probe: int, work: Path
) -> dict:
    """One cell of ``method`` in its own process; its figures (see module doc)."""
    out = work / method
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "prompt.txt"
    prompts.write_text("a red sphere\n", encoding="utf-8")
    sets = [f"threads={threads}", "eval.every=100000", "eval.ceiling=false", "eval.n_views=1"]
    sets += ["eval.snapshots=false", f"measure.every={steps if probe else 0}"]
    if probe:
        sets += [f"measure.samples={probe}", "measure.reference_samples=0", "measure.bootstrap=0"]
        sets += ["measure.variants=[all]"]
    cmd = [sys.executable, "-m", "benchmark", "run", "--prior", f"sd:{sd}", "--methods", method]
    cmd += ["--prompts", str(prompts), "--steps", str(steps), "--out", str(out), "--quiet"]
    cmd += ["--no-report"]
    for item in sets + overrides:
        cmd += ["--set", item]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        return {"method": method, "error": (proc.stderr or proc.stdout)[-2000:], "wall_s": wall}
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    result = read_cell(run, method, steps, probe, wall)
    result["notes"] = [line for line in proc.stderr.splitlines() if line.startswith("note: ")]
    return result


def read_cell(run: Path, method: str, steps: int, probe: int = 0, wall: float = 0.0) -> dict:
    """The figures of one finished cell's run directory ``run`` (see module doc)."""
    import pandas as pd

    frame = pd.read_parquet(run / "metrics.parquet")  # long format: step, metric, value
    table = {(int(r.step), r.metric): float(r.value) for r in frame.itertuples()}

    def value(step: int, name: str) -> float | None:
        return table.get((step, name))

    train = [value(s, "train_seconds") for s in range(1, steps + 1)]
    step_seconds = [b - a for a, b in zip([0.0] + train[:-1], train, strict=True)]
    timed = step_seconds[1:] or step_seconds
    sections = {
        name.split("/", 1)[1]: v
        for (step, name), v in table.items()
        if step == steps and name.startswith("time/") and name not in ("time/eval", "time/cpu_step")
    }
    peaks = [v for (_, name), v in table.items() if name == "mem/peak_rss_mb"]
    cpu = [value(s, "time/cpu_step") for s in range(1, steps + 1)]
    cpu_timed = cpu[1:] or cpu
    result = {
        "method": method,
        "s_per_step": statistics.median(timed),
        "cpu_s_per_step": statistics.median(cpu_timed) if None not in cpu_timed else None,
        "cpu_step_seconds": cpu,
        "step_seconds": step_seconds,
        "sections": sections,
        "peak_rss_gb": max(peaks) / 1024.0 if peaks else None,
        "wall_s": wall,
    }
    result["conv"] = {
        name.split("/", 1)[1]: v
        for (step, name), v in sorted(table.items())
        if step == steps and name.startswith("conv/")
    }
    if probe:
        seconds = value(steps, "var/seconds")
        result["probe_samples"] = probe
        result["probe_s_per_sample"] = None if seconds is None else seconds / probe
        if seconds is not None:
            result["probe_ratio_to_step"] = seconds / probe / result["s_per_step"]
    return result


def format_table(results: list[dict], taesd: bool = True) -> str:
    sds = next((r for r in results if r["method"] == "sds" and "s_per_step" in r), None)
    lines = ["method  s/step  x SDS  CPU s/step  x SDS  peak RSS GB  sections (last step, s)"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['method']:<6}  failed: {r['error'].strip().splitlines()[-1]}")
            continue
        ratio = r["s_per_step"] / sds["s_per_step"] if sds else float("nan")
        r["ratio_to_sds"] = ratio
        cpu = r.get("cpu_s_per_step") or float("nan")
        cpu_ratio = (
            cpu / sds["cpu_s_per_step"] if sds and sds.get("cpu_s_per_step") else float("nan")
        )
        r["cpu_ratio_to_sds"] = cpu_ratio
        parts = " ".join(f"{k}={v:.1f}" for k, v in sorted(r["sections"].items()))
        peak = f"{r['peak_rss_gb']:.1f}" if r["peak_rss_gb"] is not None else "?"
        line = (
            f"{r['method']:<6}  {r['s_per_step']:6.1f}  {ratio:5.2f}  {cpu:10.1f}  {cpu_ratio:5.2f}"
            f"  {peak:>11}  {parts}"
        )
        if "probe_s_per_sample" in r and r["probe_s_per_sample"] is not None:
            line += (
                f"  probe {r['probe_s_per_sample']:.1f} s/sample"
                f" ({r['probe_ratio_to_step']:.2f}x step)"
            )
        lines.append(line)
    lines += conv_lines(results)
    lines += target_lines(results, taesd)
    notes = {note for r in results for note in r.get("notes", [])}
    return "\n".join(lines + sorted(notes))


def conv_lines(results: list[dict]) -> list[str]:
    """The convergence signals of each cell's last evaluation, one line per method
    ('METHOD  conv/* at the last step: name=value ...'); none for a cell without them (a
    failed cell has no ``conv``)."""
    return [
        f"{r['method']:<6}  conv/* at the last step: "
        + " ".join(f"{k}={v:.4g}" for k, v in r["conv"].items())
        for r in results
        if r.get("conv")
    ]


#: targets at full size: SSD's step <= 1.3x SDS's with TAESD, <= 1.5x without (the full VAE
#: decoder feeds DPT), every cell's peak RSS <= 12 GB
SSD_RATIO_TARGET = 1.3
SSD_RATIO_TARGET_WITHOUT_TAESD = 1.5
PEAK_RSS_TARGET_GB = 12.0


def target_lines(results: list[dict], taesd: bool = True) -> list[str]:
    """'target ...: met / NOT met' lines for the targets the rows can answer."""
    rows = {r["method"]: r for r in results if "error" not in r}
    lines = []
    if "ssd" in rows and "sds" in rows:
        ratio = rows["ssd"]["s_per_step"] / rows["sds"]["s_per_step"]
        target = SSD_RATIO_TARGET if taesd else SSD_RATIO_TARGET_WITHOUT_TAESD
        word = "met" if ratio <= target else "NOT met"
        what = "" if taesd else " without TAESD"
        lines.append(f"target SSD <= {target}x SDS per step{what}: {ratio:.2f}x, {word}")
    peaks = {m: r["peak_rss_gb"] for m, r in rows.items() if r.get("peak_rss_gb") is not None}
    if peaks:
        worst = max(peaks, key=peaks.get)
        word = "met" if peaks[worst] <= PEAK_RSS_TARGET_GB else "NOT met"
        lines.append(
            f"target peak RSS <= {PEAK_RSS_TARGET_GB:.0f} GB per cell: max {peaks[worst]:.1f} GB"
            f" ({worst}), {word}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.checks.scale_check", description=__doc__
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="fixture cache dir")
    parser.add_argument("--methods", default="sds,vsd,ssd")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe", type=int, default=0, help="also probe K samples at the end")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("scale_check.json"))
    parser.add_argument("--min-available-gb", type=float, default=13.0)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--without-taesd",
        action="store_true",
        help="run on DIR/sd without its taesd/ (symlinks in DIR/sd-without-taesd), as Stable "
        "Diffusion is downloaded: SSD's phi falls back to the full VAE decoder",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return _main(args)
    except UserError as exc:
        print(f"error: {printable_line(str(exc))}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    methods = check_arguments(args)
    sd = ensure_full_size(args.dir.expanduser())
    if args.without_taesd:
        sd = without_taesd(sd)
    results: list[dict] = []
    report = {"dir": str(sd), "steps": args.steps, "overrides": args.overrides, "rows": results}
    report["taesd"] = not args.without_taesd
    with tempfile.TemporaryDirectory(prefix="steinbench-scale-") as tmp:
        tmp = args.work or tmp
        for method in methods:
            available = _available_gb()
            if available < args.min_available_gb:
                print(
                    f"error: {available:.1f} GB available, {args.min_available_gb} needed for "
                    f"a full-size {method} cell; stopping",
                    file=sys.stderr,
                )
                break
            print(f"running {method} ({args.steps} steps) ...", flush=True)
            results.append(
                run_method(
                    sd, method, args.steps, args.threads, args.overrides, args.probe, Path(tmp)
                )
            )
            write_report(args.out, report)
    print(format_table(results, taesd=not args.without_taesd))
    write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0 if results and all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
