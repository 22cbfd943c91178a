"""Soak: kill a sweep and a run at random (seeded) moments, continue them, and compare every
result with an undisturbed sweep and run of the same inputs.

1. Sweep: a 16-cell sweep (``benchmark sweep``, 4 methods x 2 prompts x 2 seeds, tiny world
   settings, 150 steps, local executor, 2 workers). Its driver is killed with SIGKILL twice,
   each time once a random number (1-4) of cells have finished since it started and another
   cell is training (it has a checkpoint), plus a random 0-1 s; then the same command is run
   again. The third driver runs to the end.
2. Run: one ``benchmark run`` of 2 cells (400 steps each, one after the other), stopped five
   times by SIGKILL, SIGINT or SIGTERM (mixed, at least one of each) at random moments of its
   training: once it has logged a random 5-90% of the undisturbed run's rows (sorted, so the
   kills move through both cells; rows are flushed with each checkpoint), plus a random
   0-0.3 s; each time continued with ``benchmark resume``. The sixth process runs to the end.

Compared with the undisturbed sweep and run, exactly (no tolerance): every row of each
``metrics.parquet`` (all columns but ``run_id``, a timestamped id for a run; rows of machine
metrics, wall-clock seconds and memory, ``results.schema.is_machine_metric``, left out); each
cell's results in the manifests (all fields but ``train_seconds``); ``config.yaml`` (all keys
but ``out``, the results folder); ``summary.csv`` (all columns but the ``*seconds*`` ones);
and the names of the files left in every run dir (but ``.lock``, which only names the last
holder).

Prints a table (part, attempt, signal, moment, state at the kill, outcome), then IDENTICAL or
DIFFERENT (or INCOMPLETE when a planned kill could not land); exit code 0 only for IDENTICAL
with every process ending as expected (-9 after SIGKILL, 130 after SIGINT/SIGTERM, 0 at the
end, no traceback), 1 otherwise, 2 for bad arguments.

    python scripts/soak.py --seed 0                # about 10 min on 2 idle cores
    python scripts/soak.py --small --seed 1        # 4 cells killed once, a run stopped twice
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".steinbench-soak"  # a --work folder holding it was made by this script
#: tiny world settings of every soak process. No CLIP scorer: it is a pure function of the
#: renders the comparison already covers, and importing it (open_clip) costs about 5 s of CPU in
#: every process the soak starts (the resume tests in tests/test_resume.py keep it).
TINY = {
    "render": {"height": 16, "width": 16},
    "voxel": {"resolution": 16, "n_samples": 16},
    "world": {"n_azimuth": 4, "elevations": [0.0, 30.0], "supersample": 1},
    "measure": {"every": 10, "samples": 2, "bootstrap": 0},
    "eval": {"every": 20, "snapshots": False, "n_views": 2, "clip": "none"},
    "threads": 1,
    "checkpoint_every": 3,
}
FULL = {
    "methods": ["sds", "ssd", "csd", "nfsd"],
    "prompts": ["a red sphere", "a snowman"],
    "seeds": [0, 1],
    "sweep_steps": 150,
    "run_steps": 400,
    "sweep_kills": 2,
    "run_kills": 5,
}
SMALL = {
    "methods": ["sds", "ssd"],
    "prompts": ["a red sphere"],
    "seeds": [0, 1],
    "sweep_steps": 100,
    "run_steps": 200,
    "sweep_kills": 1,
    "run_kills": 2,
}
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}  # fmt: skip


class BadArgs(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + 2 lines)
        raise BadArgs(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(description=__doc__.split("\n\n")[0], prog="scripts/soak.py")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (>= 0)")
    parser.add_argument("--work", default="/tmp/steinbench-soak", help="scratch folder: new, "
                        "empty or made by this script (then emptied)")  # fmt: skip
    parser.add_argument("--only", choices=("sweep", "run"), help="one part only")
    parser.add_argument("--small", action="store_true", help="4 cells killed once, a run "
                        "stopped twice (the test's size)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="sweep workers (1-8)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise BadArgs(f"--seed must be >= 0, got {args.seed}")
    if not 1 <= args.workers <= 8:
        raise BadArgs(f"--workers must be 1-8, got {args.workers}")
    work = Path(args.work)
    if work.exists() and not work.is_dir():
        raise BadArgs(f"--work {work} is not a folder")
    if work.is_dir() and any(work.iterdir()) and not (work / MARKER).is_file():
        raise BadArgs(f"--work {work} is not empty and was not made by this script; "
                      "give a new folder")  # fmt: skip
    if not work.exists() and not work.parent.is_dir():
        raise BadArgs(f"--work {work}: no folder {work.parent}")
    return args


class Soak:
    def __init__(self, work: Path, rng: random.Random, size: dict, workers: int) -> None:
        self.work, self.rng, self.size, self.workers = work, rng, size, workers
        self.rows: list[dict] = []
        self.problems: list[str] = []
        self.incomplete: list[str] = []
        self.logs = 0

    # ------------------------------------------------------------------ processes
    def env(self) -> dict:
        return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
                    PYTHONPATH=str(ROOT), STEINBENCH_CACHE=str(self.work / "cache"))  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen:
        self.logs += 1
        log = open(self.work / "logs" / f"{self.logs:02d}_{args[0]}.txt", "w+")  # noqa: SIM115
        command = [sys.executable, "-m", "benchmark", *args]
        process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=log)
        process.log = log
        return process

    def finish(self, process: subprocess.Popen, expected: int, what: str) -> str:
        """Wait for ``process``; its exit code and log checked; returns the outcome text."""
        try:
            code = process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            self.problems.append(f"{what}: still running after 900 s (killed)")
        process.log.seek(0)
        text = process.log.read()
        process.log.close()
        outcome = f"exit {code}"
        if code != expected:
            self.problems.append(f"{what}: exit {code}, expected {expected}: {text[-600:]}")
            outcome += f" (EXPECTED {expected})"
        if "Traceback" in text:
            self.problems.append(f"{what}: a traceback: {text[-1500:]}")
            outcome += " TRACEBACK"
        return outcome

    def row(self, part, attempt, sig, moment, state, outcome) -> None:
        self.rows.append(dict(part=part, attempt=attempt, signal=sig, moment=moment,
                              state=state, outcome=outcome))  # fmt: skip
        print(f"  {part} {attempt}: {sig} {moment} | {state} | {outcome}", flush=True)

    # ---------------------------------------------------------------------- sweep
    def sweep(self) -> bool:
        spec = {"name": "soak", "methods": self.size["methods"], "prompts": self.size["prompts"],
                "seeds": self.size["seeds"], "steps": self.size["sweep_steps"], "retries": 1,
                "base_config": TINY}  # fmt: skip
        spec_path = self.work / "sweep.yaml"
        spec_path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
        n_cells = math.prod(len(spec[k]) for k in ("methods", "prompts", "seeds"))
        common = [str(spec_path), "--workers", str(self.workers), "--quiet"]
        began = time.perf_counter()
        ref = self.start("sweep", *common, "--out", str(self.work / "sweep_ref"))
        outcome = self.finish(ref, 0, "reference sweep")
        self.row("sweep", "ref", "-", "-", f"{n_cells} cells", f"{outcome}, "
                 f"{time.perf_counter() - began:.0f} s")  # fmt: skip
        out = self.work / "sweep_soak"
        kills = self.size["sweep_kills"]
        began = time.perf_counter()
        for attempt in range(1, kills + 2):
            driver = self.start("sweep", *common, "--out", str(out))
            if attempt > kills:
                outcome = self.finish(driver, 0, f"sweep attempt {attempt}")
                done = sum(cell_state(d) == "finished" for d in cell_dirs(out))
                self.row("sweep", attempt, "-", "runs to the end", "-",
                         f"{outcome}, {done}/{n_cells} cells finished")  # fmt: skip
                continue
            before = sum(cell_state(d) == "finished" for d in cell_dirs(out))
            left = n_cells - before
            target = before + self.rng.randint(1, max(1, min(left - 2, n_cells // 4)))
            delay = self.rng.uniform(0.0, 1.0)
            while driver.poll() is None:  # `target` cells finished, then one cell training
                if sum(cell_state(d) == "finished" for d in cell_dirs(out)) >= target and any(
                    cell_state(d) != "finished" and any((d / "checkpoints").glob("*.pt"))
                    for d in cell_dirs(out)
                ):
                    break
                time.sleep(0.02)
            time.sleep(delay)
            if driver.poll() is not None:
                self.incomplete.append(f"sweep attempt {attempt} ended before its kill")
                self.row("sweep", attempt, "KILL", "missed: the sweep had ended", "-",
                         self.finish(driver, 0, f"sweep attempt {attempt}"))  # fmt: skip
                break
            workers = worker_pids(driver.pid)
            driver.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter()
            outcome = self.finish(driver, -signal.SIGKILL, f"sweep attempt {attempt}")
            states = [cell_state(d) for d in cell_dirs(out)]
            done, partial = states.count("finished"), len(states) - states.count("finished")
            ckpts = sum(1 for d in cell_dirs(out) for _ in (d / "checkpoints").glob("*.pt"))
            gone = wait_gone(workers, 120.0)
            stopped = (f"{len(workers)} workers gone {gone:.1f} s later" if gone is not None
                       else f"{len(workers)} workers STILL RUNNING 120 s later")  # fmt: skip
            if gone is None:
                self.problems.append(f"sweep attempt {attempt}: its workers outlived the driver")
            self.row("sweep", attempt, "KILL",
                     f"{target - before} cell(s) done, a cell training, + {delay:.1f} s "
                f"({killed_at - began:.0f} s in)",
                     f"{done}/{n_cells} cells finished, {partial} partial ({ckpts} checkpoints)",
                     f"{outcome}; {stopped}")  # fmt: skip
        wall = time.perf_counter() - began
        self.row("sweep", "all", "-", "-", "-", f"{wall:.0f} s with kills and reruns")
        return self.compare_sweeps(self.work / "sweep_ref", out)

    def compare_sweeps(self, ref: Path, soak: Path) -> bool:
        import pandas as pd

        differences = compare_frames(
            pd.read_parquet(soak / "metrics.parquet"),
            pd.read_parquet(ref / "metrics.parquet"),
            ["cell_id", "method", "prompt", "seed", "step", "metric"],
            drop=(),
        )
        manifest = json.loads((soak / "sweep_manifest.json").read_text())
        unfinished = [c for c, e in manifest["cells"].items() if e["status"] != "finished"]
        if unfinished:
            differences.append(f"cells not finished: {unfinished}")
        names = sorted(d.name for d in cell_dirs(ref))
        if names != sorted(d.name for d in cell_dirs(soak)):
            differences.append("the cell folders differ")
        for name in names:
            differences += [
                f"{name}: {d}"
                for d in compare_run_dirs(ref / "cells" / name, soak / "cells" / name)
            ]
        return self.verdict("sweep", differences)

    # ------------------------------------------------------------------------ run
    def run(self) -> bool:
        prompts = self.work / "prompts.txt"
        prompts.write_text(self.size["prompts"][0] + "\n")
        args = [
            "--methods",
            "sds,ssd",
            "--prompts",
            str(prompts),
            "--seeds",
            "0",
            "--steps",
            str(self.size["run_steps"]),
            "--quiet",
            "--no-report",
            "--set",
            "workers=1",
        ]
        for item in set_items(TINY):
            args += ["--set", item]
        began = time.perf_counter()
        ref = self.start("run", *args, "--out", str(self.work / "run_ref"))
        outcome = self.finish(ref, 0, "reference run")
        (ref_dir,) = [p for p in (self.work / "run_ref").iterdir() if p.is_dir()]
        cells = json.loads((ref_dir / "manifest.json").read_text())["cells"]
        train = sum(c["train_seconds"] for c in cells)
        self.row("run", "ref", "-", "-", f"{len(cells)} cells, {train:.1f} s of training",
                 f"{outcome}, {time.perf_counter() - began:.0f} s")  # fmt: skip
        kills = self.size["run_kills"]
        names = ["KILL", "INT", "TERM"] * kills
        plan = names[:3] + [self.rng.choice(names[:3]) for _ in range(kills - 3)]
        plan = plan[:kills]
        self.rng.shuffle(plan)
        root = self.work / "run_soak"
        # each kill once the run has logged this fraction of the undisturbed run's rows
        total = count_rows(ref_dir)
        points = sorted(self.rng.uniform(0.05, 0.9) for _ in range(kills))
        began = time.perf_counter()
        process = self.start("run", *args, "--out", str(root))
        for attempt in range(1, kills + 2):
            what = f"run process {attempt}"
            if attempt > kills:
                outcome = self.finish(process, 0, what)
                status = read_json(run_dir_of(root) / "manifest.json").get("status")
                self.row("run", attempt, "-", "runs to the end", "-", f"{outcome}, {status}")
                break
            target, delay = int(points[attempt - 1] * total), self.rng.uniform(0.0, 0.3)
            while process.poll() is None and not (
                read_json(run_dir_of(root) / "manifest.json").get("pid") == process.pid
                and count_rows(run_dir_of(root)) >= target
            ):  # the pid is written once it holds the lock and trains; rows at checkpoints
                time.sleep(0.01)
            time.sleep(delay)
            name = plan[attempt - 1]
            if process.poll() is not None:
                self.incomplete.append(f"{what} finished before its {name}")
                self.row("run", attempt, name, f"missed: {delay:.2f} s", "-",
                         self.finish(process, 0, what))  # fmt: skip
                break
            process.send_signal(SIGNALS[name])
            outcome = self.finish(process, -signal.SIGKILL if name == "KILL" else 130, what)
            run_dir = run_dir_of(root)
            manifest = read_json(run_dir / "manifest.json")
            done = len(manifest.get("cells", []))
            self.row("run", attempt, name,
                     f"{target}/{total} rows logged ({points[attempt - 1]:.0%}) + {delay:.2f} s",
                     f"{count_rows(run_dir)} rows, {done}/{len(cells)} cells finished, "
                     f"status {manifest.get('status')}", outcome)  # fmt: skip
            if manifest.get("status") == "finished":
                self.incomplete.append(f"{what}: the {name} came after the run finished")
                break
            process = self.start("resume", str(run_dir), "--quiet", "--no-report")
        run_dir = run_dir_of(root)
        resumed = len(read_json(run_dir / "manifest.json").get("resumed", []))
        self.row("run", "all", "-", "-", f"{resumed} resumes in the manifest",
                 f"{time.perf_counter() - began:.0f} s with kills and resumes")  # fmt: skip
        return self.verdict("run", compare_run_dirs(ref_dir, run_dir, drop=("run_id",)))

    def verdict(self, part: str, differences: list[str]) -> bool:
        for line in differences[:20]:
            print(f"  {part} DIFFERENCE: {line[:400]}")
        print(f"{part}: {'DIFFERENT' if differences else 'IDENTICAL'}", flush=True)
        return not differences


# ---------------------------------------------------------------------- helpers
def set_items(config: dict, prefix: str = "") -> list[str]:
    """``--set`` items of a nested config.

    >>> set_items({"a": {"b": [0.0, 1.5], "c": False}, "d": "x"})
    ['a.b=[0.0, 1.5]', 'a.c=false', 'd=x']
    """
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += set_items(value, f"{prefix}{key}.")
        elif isinstance(value, bool | list):
            out.append(f"{prefix}{key}={json.dumps(value)}")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cell_dirs(sweep_dir: Path) -> list[Path]:
    cells = sweep_dir / "cells"
    return sorted(p for p in cells.iterdir() if p.is_dir()) if cells.is_dir() else []


def cell_state(cell_dir: Path) -> str:
    return read_json(cell_dir / "manifest.json").get("status") or "starting"


def run_dir_of(root: Path) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return dirs[0] if len(dirs) == 1 else root / "(none yet)"


def count_rows(run_dir: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(run_dir / "metrics.parquet").metadata.num_rows
    except (OSError, ValueError):
        return 0


def worker_pids(driver: int) -> list[int]:
    """The pool workers of a sweep driver (spawned children, not the resource tracker)."""
    import psutil

    out = []
    for child in psutil.Process(driver).children():
        try:
            line = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in line and "resource_tracker" not in line:
            out.append(child.pid)
    return out


def wait_gone(pids: list[int], limit: float) -> float | None:
    """Seconds until every process in ``pids`` has exited, None if one outlives ``limit``."""
    import psutil

    began = time.perf_counter()
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=limit)
    return None if alive else time.perf_counter() - began


def compare_frames(a, b, keys: list[str], drop=("run_id",)) -> list[str]:
    """Row-for-row exact comparison of two metrics frames (machine metrics left out)."""
    import pandas as pd

    from results.schema import is_machine_metric

    def canon(frame):
        frame = frame.drop(columns=[c for c in drop if c in frame.columns])
        frame = frame[~frame["metric"].map(is_machine_metric)]
        if frame.duplicated(keys).any():
            return None
        return frame.sort_values(keys).reset_index(drop=True)

    a, b = canon(a), canon(b)
    if a is None or b is None:
        return ["duplicate rows in metrics.parquet"]
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError as exc:
        return [f"metrics.parquet: {' '.join(str(exc).split())}"]
    return []


def compare_run_dirs(ref: Path, soak: Path, drop=()) -> list[str]:
    import pandas as pd
    import yaml

    differences = []
    names = [sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.name != ".lock")
             for d in (ref, soak)]  # fmt: skip
    if names[0] != names[1]:
        differences.append(f"files: {sorted(set(names[0]) ^ set(names[1]))}")
    keys = ["method", "prompt", "seed", "step", "metric"]
    differences += compare_frames(
        pd.read_parquet(soak / "metrics.parquet"),
        pd.read_parquet(ref / "metrics.parquet"),
        keys,
        drop,
    )
    configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in (ref, soak)]
    for config in configs:
        config.pop("out", None)
    if configs[0] != configs[1]:
        differences.append("config.yaml")

    def cells(d: Path) -> str:
        out = [{k: v for k, v in c.items() if k != "train_seconds"}
               for c in read_json(d / "manifest.json").get("cells", [])]  # fmt: skip
        return json.dumps(out, sort_keys=True)

    if cells(ref) != cells(soak):
        differences.append("the manifest's cell results")
    summaries = [pd.read_csv(d / "summary.csv") for d in (ref, soak)]
    summaries = [s[[c for c in s.columns if "seconds" not in c]] for s in summaries]
    if not summaries[0].equals(summaries[1]):
        differences.append("summary.csv")
    return differences


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except BadArgs as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = Path(args.work)
    if work.is_dir():
        shutil.rmtree(work)  # made by this script (checked above)
    (work / "logs").mkdir(parents=True)
    (work / MARKER).write_text("scratch folder of scripts/soak.py\n")
    size = SMALL if args.small else FULL
    soak = Soak(work, random.Random(args.seed), size, args.workers)
    began = time.perf_counter()
    print(f"soak --seed {args.seed}{' --small' if args.small else ''}: work in {work}")
    same = []
    if args.only in (None, "sweep"):
        same.append(soak.sweep())
    if args.only in (None, "run"):
        same.append(soak.run())
    print("\n| part | attempt | signal | moment | state after the kill | outcome |")
    print("|---|---|---|---|---|---|")
    for r in soak.rows:
        print(f"| {r['part']} | {r['attempt']} | {r['signal']} | {r['moment']} | "
              f"{r['state']} | {r['outcome']} |")  # fmt: skip
    for line in soak.problems:
        print(f"PROBLEM: {line}")
    for line in soak.incomplete:
        print(f"INCOMPLETE: {line}")
    print(f"wall {time.perf_counter() - began:.0f} s")
    if not all(same):
        print("DIFFERENT")
        return 1
    if soak.problems or soak.incomplete:
        print("INCOMPLETE" if soak.incomplete and not soak.problems else "PROBLEMS")
        return 1
    print("IDENTICAL")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
