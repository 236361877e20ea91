"""The benchmarks' results: a JSON line per run in benchmarks/results/BENCHMARK.jsonl (the
history, machine-readable), and BENCHMARKS.md written from them.

    python -m benchmarks.results          # write BENCHMARKS.md from the JSON lines

A record is {"benchmark", "title", "date", "commit", "machine", "command", "figures", "body"}.
`figures` are the rows of BENCHMARKS.md's tables: {"figure", "value", "target", "met",
"group", "order"} and, where they differ from the record's, "kind", "date", "commit" and
"command"; the newest record of each figure on each kind of machine is its current row, so
BENCHMARKS.md keeps one row per figure and CPU (or GPU) kind, and the history keeps the rest.
`body` is the Markdown that the benchmark printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.common import BENCHMARKS_MD, REPO

RESULTS = REPO / "benchmarks" / "results"
GROUPS = ("speed", "quality", "teach", "explorer", "scale", "gpu")  # the tables, in this order
TITLES = {
    "speed": "Speed against the usual tools (side by side in one run)",
    "quality": "Cluster quality (K = the number of classes, no labels used)",
    "teach": "Finding a group with the teach loop and the review grid",
    "explorer": "The explorer",
    "scale": "Scale",
    "gpu": "On a GPU",
}


def machine_kind(machine: str | None) -> str:
    """The kind of machine a figure holds for: the GPU's name if it ran on one, else the CPU's
    vendor and family ('AMD EPYC', 'Intel Xeon')."""
    text = machine or ""
    gpu = re.search(r"GPU (NVIDIA [\w ]+?\d+)", text)
    if gpu:
        return gpu.group(1)
    for kind in ("AMD EPYC", "Intel Xeon", "Intel(R) Xeon(R)"):
        if kind in text:
            return kind.replace("(R)", "")
    return "unknown CPU"


def commit() -> str | None:
    """The short id of the checkout's HEAD, with '+' when files differ from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            # the results and BENCHMARKS.md change with every run: only the code counts
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!BENCHMARKS.md",
                ":!benchmarks/results",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def record(
    benchmark: str,
    title: str,
    body: str,
    *,
    figures: list[dict] = (),
    date: str,
    machine: str | None,
    command: str | None,
    folder: Path = RESULTS,
    markdown_path: Path = BENCHMARKS_MD,
) -> dict:
    """Append one run to benchmarks/results/BENCHMARK.jsonl in one O_APPEND write (two runs
    finishing at once do not interleave), then write BENCHMARKS.md again; return the record."""
    entry = {
        "benchmark": benchmark,
        "title": title,
        "date": date,
        "commit": commit(),
        "machine": machine,
        "command": command,
        "figures": list(figures),
        "body": body.strip(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{benchmark}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode())
    finally:
        os.close(fd)
    write_markdown(markdown_path, folder)
    return entry


def load(folder: Path = RESULTS) -> list[dict]:
    """Every record, oldest first: by date, then in the order each file holds them."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path.name} line {number}: not JSON ({e.msg})") from None
    return sorted(records, key=lambda r: r.get("date") or "")


def current(records: list[dict]) -> dict[str, list[dict]]:
    """Each figure's newest row on each kind of machine, by table: {group: [row]} where a row is
    the figure with its record's command, machine kind, date and commit."""
    newest: dict[tuple[str, str], dict] = {}
    for r in records:
        for f in r.get("figures") or []:
            kind = f.get("kind") or machine_kind(r.get("machine"))
            newest[(f["figure"], kind)] = {
                **f,
                "kind": kind,
                "command": f.get("command") or r.get("command"),
                "date": f.get("date") or r.get("date"),
                "commit": f.get("commit") or r.get("commit"),
            }
    tables: dict[str, list[dict]] = {}
    for row in newest.values():
        tables.setdefault(row.get("group", "speed"), []).append(row)
    return tables


def verdict(row: dict) -> str:
    if row.get("met") is None:
        return ""
    return "met" if row["met"] else "**missed**"


def markdown(records: list[dict]) -> str:
    """BENCHMARKS.md: how to read it, then one table per group of figures."""
    tables = current(records)
    counts = {}
    for r in records:
        counts[r["benchmark"]] = counts.get(r["benchmark"], 0) + 1
    lines = [
        "# Benchmarks",
        "",
        "The current figure of each measurement at today's defaults, one row per figure and kind of",
        "machine, with the command that reproduces it. A target counts as met only where it holds on",
        "every kind of machine it was measured on. Speed ratios are measured side by side in one run,",
        "so read them rather than absolute times on a busy machine. Every run of every benchmark is",
        "kept, with its full printout, in `benchmarks/results/*.jsonl`; this file is written from",
        "them by `python -m benchmarks.results` (do not edit it by hand).",
        "",
        "Machines: 2-core Intel Xeon and AMD EPYC (AVX-512) with 24 GiB; NVIDIA H100 and H200",
        "with 16 cores. `python -m benchmarks.speed --stage all --quick` checks the speed targets",
        "on your own machine in a few minutes.",
    ]
    for group in [g for g in GROUPS if g in tables] + sorted(set(tables) - set(GROUPS)):
        rows = sorted(tables[group], key=lambda r: (r.get("order", 99), r["figure"], r["kind"]))
        lines += [
            "",
            f"## {TITLES.get(group, group)}",
            "",
            "| figure | machine | value | target | | date | commit | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            cells = [
                r["figure"],
                r["kind"],
                r["value"],
                r.get("target") or "",
                verdict(r),
                r.get("date") or "",
                f"`{r['commit']}`" if r.get("commit") else "",
                f"`{r['command']}`" if r.get("command") else "",
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        notes = [r["note"] for r in rows if r.get("note")]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
    lines += [
        "",
        "## History",
        "",
        "Every run, oldest first, with what it printed: "
        + ", ".join(f"`{name}.jsonl` ({n})" for name, n in sorted(counts.items()))
        + ". Runs before 2026-12-04 were carried over from the earlier, appended form of this file.",
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path = BENCHMARKS_MD, folder: Path = RESULTS) -> None:
    """Write `path` from the records in `folder`, atomically."""
    text = markdown(load(folder))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    write_markdown()
    print(f"wrote {BENCHMARKS_MD.relative_to(REPO)} from {len(load())} runs in {RESULTS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
