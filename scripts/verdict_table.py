"""The README's verdict table from runs, stamped with the date and the commands.

    python scripts/verdict_table.py RUN_DIR [RUN_DIR ...] [--readme README.md]
    python scripts/verdict_table.py RUN_DIR --prompts prompts/single_objects.txt   # a subset

Prints a markdown table with the report's verdict columns (one row per method at equal
compute, mean [95% t CI] over prompts x seeds and its word against SDS:
``analysis.report_verdict.verdict_rows``), the sentence per method, and a line naming the date
(UTC), this command and the runs' own commands (from their manifests). With ``--readme`` the
block between ``<!-- verdict-table -->`` and ``<!-- /verdict-table -->`` of that file is
replaced by it. Reads results only.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- verdict-table -->", "<!-- /verdict-table -->"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def markdown(header, rows, sentences, stamp: str) -> str:
    """The block: the stamp, the table, one sentence per method.

    >>> print(markdown(["method", "NSR"], [["sds", "4.0"]], ["sds is the reference."], "today"))
    today
    <BLANKLINE>
    | method | NSR |
    |---|---|
    | sds | 4.0 |
    <BLANKLINE>
    - sds is the reference.
    """
    lines = [stamp, "", "| " + " | ".join(map(_cell, header)) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    lines += ["", *(f"- {s}" for s in sentences)]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the lines between the markers replaced by ``block``.

    >>> replace_block("a\\n<!-- verdict-table -->\\nold\\n<!-- /verdict-table -->\\nb", "new")
    'a\\n<!-- verdict-table -->\\nnew\\n<!-- /verdict-table -->\\nb'
    """
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def verdict_block(
    run_dirs: list[Path],
    argv: list[str],
    now: datetime | None = None,
    prompts: list[str] | None = None,
) -> str:
    """The stamped markdown block of ``run_dirs`` (only the cells of ``prompts`` if given)."""
    from analysis.load import load_results
    from analysis.report_verdict import verdict_rows
    from analysis.verdict import load_manifests, method_table

    manifests = load_manifests(run_dirs)
    df = load_results(run_dirs)
    if prompts is not None:
        df = df[df["prompt"].isin(prompts)]
        if df.empty:
            raise ValueError("no cell of the runs has one of the given prompts")
    estimates, cells = method_table(df, manifests)
    header, rows, sentences = verdict_rows(estimates, cells)
    commands = [shlex.join(m.get("command") or []) for m in manifests.values()]
    date = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    stamp = (
        f"Generated {date} by `{shlex.join(['python', 'scripts/verdict_table.py', *argv])}` "
        f"from the run(s) `{'`, `'.join(c for c in commands if c) or 'unknown command'}`."
    )
    return markdown(header, rows, sentences, stamp)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--readme", type=Path, default=None)
    parser.add_argument("--prompts", type=Path, default=None, help="only these prompts (a file)")
    args = parser.parse_args(argv)
    prompts = None
    if args.prompts is not None:
        from benchmark.run.prompts import read_prompts

        prompts = read_prompts(args.prompts)
    block = verdict_block(args.runs, argv, prompts=prompts)
    if args.readme is None:
        print(block)
        return 0
    from results.atomic import atomic_write_text

    text = args.readme.read_text(encoding="utf-8")
    atomic_write_text(args.readme, replace_block(text, block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
