"""The throughput matrix of issue 12: every cell one run of ``throughput.py``, and the table made from them.

A cell is (``max_length``, sample lengths, model, threads). ``run`` runs the cells that have no
result yet, one at a time, each into ``benchmarks/out/matrix/<cell>/throughput.json``; ``table``
reads every result there and prints the markdown table that benchmarks/README.md holds, with the
target checked per cell and the cells not run listed, so the README's table is re-made from the
files, not typed.

Two runners may share the queue (a cell is claimed by its folder's ``.claimed`` file, which holds
the runner's pid; the claim of a process that is gone is taken over), so
on a 2-core machine the 1-thread cells can run two at a time, each pinned to its own core
(``--cpus 0`` and ``--cpus 1``; the affinity is recorded in the cell's JSON). The target is the
issue's: tunescout >= 1.5x TRL's default collator and >= 1.2x the fastest TRL mode, with peak RSS
no higher than TRL's ``padding_free``.

Run: ``.venv/bin/python benchmarks/matrix.py run [--threads 1] [--model tiny-h128] [--cpus 0]``,
``matrix.py fill`` (the same filters; ``--micro-batch 2`` for padded peers the OOM killer ended) to
re-run only the trainers a cell lost, then
``.venv/bin/python benchmarks/matrix.py table``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "matrix"
"""Work files of each cell (models, data, logs); not kept in git."""
RESULTS = HERE / "results" / "matrix"
"""Each cell's JSON, kept in git so that ``table`` re-makes the README's table on any checkout."""
MAX_LENGTHS = (1024, 2048, 4096)
LENGTHS = ("20-1000", "20-3000")
MODELS = ("tiny-h128", "tiny-h256", "smollm2")
THREADS = (1, 2)
TRAINERS = "tunescout,hf-trainer,hf-trainer-mb1,trl-sft,trl-padding-free,trl-packing"
"""The issue's peers; ``tunescout-budget-maxlen`` (a second tunescout budget) is left out of the matrix."""
TRL = ("trl-sft", "trl-padding-free", "trl-packing")
TARGET_DEFAULT, TARGET_FASTEST = 1.5, 1.2


@dataclass(frozen=True)
class Cell:
    max_length: int
    lengths: str
    model: str
    threads: int

    @property
    def name(self) -> str:
        return f"ml{self.max_length}-len{self.lengths}-{self.model}-t{self.threads}"

    def command(self, out: Path) -> list[str]:
        family, _, hidden = self.model.partition("-h")
        cmd = [sys.executable, str(HERE / "throughput.py"), "--model", family, "--threads", str(self.threads),
               "--max-length", str(self.max_length), "--lengths", self.lengths, "--trainers", TRAINERS,
               "--out", str(out)]
        return cmd + (["--hidden", hidden] if hidden else [])


def all_cells() -> list[Cell]:
    """Cheapest first: tiny models before SmolLM2, short rows before long."""
    return [Cell(ml, lengths, model, threads) for model in MODELS for lengths in LENGTHS
            for ml in MAX_LENGTHS for threads in THREADS]


def _chosen(args: argparse.Namespace) -> list[Cell]:
    return [c for c in all_cells()
            if (not args.threads or c.threads in args.threads) and (not args.model or c.model in args.model)
            and (not args.max_length or c.max_length in args.max_length)
            and (not args.lengths or c.lengths in args.lengths)]


def _claim(folder: Path, force: bool) -> bool:
    """Take the cell for this process: its ``.claimed`` file holds our pid. A claim whose process
    is gone (a runner killed mid-cell) is taken over; a live one is left to its runner."""
    claim = folder / ".claimed"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = claim.read_text().strip()
        if not force and (not owner.isdigit() or _alive(int(owner))):
            return False
        claim.write_text(str(os.getpid()))
        return True
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(args: argparse.Namespace) -> int:
    pinned = len(os.sched_getaffinity(0)) if not args.cpus else len(_cpu_list(args.cpus))
    failed = []
    for cell in _chosen(args):
        if cell.threads > pinned:
            print(f"[matrix] {cell.name}: skipped, {cell.threads} threads on {pinned} core(s)", flush=True)
            continue
        folder = OUT / cell.name
        result = folder / "throughput.json"
        if (RESULTS / f"{cell.name}.json").exists() and not args.force:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if not _claim(folder, args.force):
            continue
        try:
            result.unlink(missing_ok=True)  # a result left by an earlier, failed run is not this run's
            cmd = cell.command(result)
            if args.cpus:
                cmd = ["taskset", "-c", args.cpus, *cmd]
            print(f"[matrix] {cell.name}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            with open(folder / "run.log", "w") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
            print(f"[matrix] {cell.name}: rc {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
            if rc or not result.exists():
                failed.append(cell.name)
            else:
                _keep(cell, result.read_text())
        finally:
            (folder / ".claimed").unlink(missing_ok=True)
    if failed:
        print(f"[matrix] failed: {', '.join(failed)} (see run.log in each folder)")
    return 1 if failed else 0


def fill(args: argparse.Namespace) -> int:
    """Re-run, alone, the trainers a cell lost (a crash, the OOM killer) and merge their rows in.

    The cell's samples, order and model are rebuilt from the same seed, so the new rows measure
    the same work; each carries ``filled`` (the commit, cores and load of its own run), and the
    table marks the cell. Cells without a work-folder result are left to ``run``.

    ``--micro-batch N`` re-runs the padded peers at ``per_device_train_batch_size`` N (the same
    effective batch, more accumulation): what their user does after the OOM killer ends them at
    the default 4. The row keeps the error it replaces and the micro-batch it ran at, and the
    table names both, so a cell judged that way says so.
    """
    failed = []
    for cell in _chosen(args):
        folder = OUT / cell.name
        result = folder / "throughput.json"
        if not result.exists() or not _claim(folder, args.force):
            continue
        try:
            report = json.loads(result.read_text())
            (entry,) = report["models"].values()
            lost = _lost(entry)
            if not lost:
                continue
            patch = folder / "fill.json"
            patch.unlink(missing_ok=True)
            cmd = [c if c != TRAINERS else ",".join(lost) for c in cell.command(patch)]
            if args.micro_batch:
                cmd += ["--micro-batch", str(args.micro_batch)]
            if args.cpus:
                cmd = ["taskset", "-c", args.cpus, *cmd]
            print(f"[matrix] {cell.name}: filling {', '.join(lost)}", flush=True)
            with open(folder / "fill.log", "w") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
            if rc or not patch.exists():
                failed.append(cell.name)
                continue
            fresh = json.loads(patch.read_text())
            (new_entry,) = fresh["models"].values()
            machine = {k: fresh["machine"].get(k) for k in ("git", "affinity", "load_avg", "load_avg_after")}
            if args.micro_batch:
                machine["micro_batch"] = args.micro_batch
            old = {r["key"]: r for r in entry["results"]}
            by_key = {r["key"]: {**r, "filled": {**machine, "replaced_error": old[r["key"]].get("error")}}
                      for r in new_entry["results"]}
            entry["results"] = [by_key.get(r["key"], r) for r in entry["results"]]
            text = json.dumps(report, indent=2)
            result.write_text(text)
            _keep(cell, text)
            print(f"[matrix] {cell.name}: filled; still failed: {', '.join(_lost(entry)) or 'none'}", flush=True)
        finally:
            (folder / ".claimed").unlink(missing_ok=True)
    return 1 if failed else 0


def _lost(entry: dict[str, Any]) -> list[str]:
    """The trainers of a cell's results that did not finish (crashed, OOM-killed, timed out)."""
    return [r["key"] for r in entry["results"] if r.get("status") != "ok"]


def _keep(cell: Cell, text: str) -> None:
    """Store a cell's result where git keeps it (``table`` reads only these)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{cell.name}.json").write_text(text)


def _cpu_list(spec: str) -> list[int]:
    """``0,2-3`` -> [0, 2, 3] (taskset's list form)."""
    cpus: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def cell_row(cell: Cell, report: dict[str, Any], spans: dict[str, list[float]] | None = None
             ) -> tuple[str, list[str]]:
    """One markdown row, and what in it misses the target (empty when it meets it); the cell's
    three target figures are appended to ``spans`` (for the ranges under the table)."""
    (entry,) = report["models"].values()
    rows = {r["key"]: r for r in entry["results"] if r.get("status") == "ok"}
    failed = _lost(entry)
    if "tunescout" not in rows:
        return f"| {cell.max_length} | {cell.lengths} | {cell.model} | {cell.threads} | tunescout failed |", ["failed"]
    ours = rows["tunescout"]
    rate = ours["tokens_per_s"]
    trl = {k: rows[k] for k in TRL if k in rows}
    misses = [f"{k} failed" for k in failed]
    default = rate / trl["trl-sft"]["tokens_per_s"] if "trl-sft" in trl else None
    if default is not None and default < TARGET_DEFAULT:
        misses.append(f"x TRL default {default:.2f}")
    fastest_key = max(trl, key=lambda k: trl[k]["tokens_per_s"], default=None)
    fastest = rate / trl[fastest_key]["tokens_per_s"] if fastest_key else None
    if fastest is not None and fastest < TARGET_FASTEST:
        misses.append(f"x fastest TRL {fastest:.2f}")
    rss = ours["peak_rss_mb"]
    rss_pf = trl["trl-padding-free"]["peak_rss_mb"] if "trl-padding-free" in trl else None
    if rss_pf is not None and rss > rss_pf:
        misses.append("peak RSS")
    if spans is not None:
        for name, value in (("x TRL default", default), ("x fastest TRL", fastest),
                            ("% of TRL padding-free's peak RSS", 100 * rss / rss_pf if rss_pf else None)):
            if value is not None:
                spans.setdefault(name, []).append(value)
    hf = max((rows[k]["tokens_per_s"] for k in ("hf-trainer", "hf-trainer-mb1") if k in rows), default=None)
    data = entry["data"]
    model = "SmolLM2-135M LoRA" if cell.model == "smollm2" else cell.model.replace("-", " ")

    def ratio(x: float | None, target: float | None = None) -> str:
        if x is None:
            return "-"
        return f"**{x:.2f}× (miss)**" if target is not None and x < target else f"{x:.2f}×"

    rss_text = f"{rss:.0f} / {rss_pf:.0f} MB" if rss_pf is not None else f"{rss:.0f} / - MB"
    if rss_pf is not None and rss > rss_pf:
        rss_text = f"**{rss_text} (miss)**"
    return (f"| {cell.max_length} | {cell.lengths} ({data['length_min']}-{data['length_max']}) | {model} | "
            f"{cell.threads} | {rate:,.0f} | {ratio(default, TARGET_DEFAULT)} | {fastest_key or '-'} | "
            f"{ratio(fastest, TARGET_FASTEST)} | {ratio(rate / hf if hf else None)} | {rss_text} | "
            f"{100 * ours['padding_fraction']:.1f}% | {_affinity(report)} | {report['machine'].get('git', '?')} |"), misses


def _affinity(report: dict[str, Any]) -> str:
    cpus = report["machine"].get("affinity")
    text = "all" if not cpus or len(cpus) == report["machine"].get("cpus") else ",".join(map(str, cpus))
    (entry,) = report["models"].values()
    groups: dict[int, list[str]] = {}
    for r in entry["results"]:
        if r.get("filled"):
            groups.setdefault(r["filled"].get("micro_batch") or 0, []).append(r["key"])
    notes = [f"{', '.join(keys)} re-run alone" + (f" at micro-batch {mb}" if mb else "")
             for mb, keys in sorted(groups.items())]
    return f"{text} ({'; '.join(notes)})" if notes else text


def table(args: argparse.Namespace) -> int:
    lines = ["| max_length | lengths (seen) | model | threads | tunescout tok/s | × TRL default | fastest TRL mode "
             "| × it | × best HF Trainer | peak RSS tunescout / TRL padding-free | tunescout pad % | cores | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    missing, misses, spans = [], [], {}
    cells = sorted(all_cells(), key=lambda c: (c.max_length, c.lengths, c.model, c.threads))
    for cell in cells:
        path = RESULTS / f"{cell.name}.json"
        if not path.exists():
            missing.append(cell.name)
            continue
        try:
            row, missed = cell_row(cell, json.loads(path.read_text()), spans)
        except (KeyError, ValueError) as exc:
            missing.append(f"{cell.name} (unreadable: {exc!r})")
            continue
        lines.append(row)
        if missed:
            misses.append(f"{cell.name} ({', '.join(missed)})")
    print("\n".join(lines))
    print(f"\n{len(cells) - len(missing)} of {len(cells)} cells run; "
          f"target missed or not judged (a peer failed) in: {'; '.join(misses) or 'none'}")
    print("; ".join(f"{name}: {min(v):.2f}-{max(v):.2f} over {len(v)} cells" for name, v in spans.items()))
    if missing:
        print(f"not run: {', '.join(missing)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="run the cells without a result")
    runner.add_argument("--threads", type=int, nargs="*", choices=THREADS)
    runner.add_argument("--model", nargs="*", choices=MODELS)
    runner.add_argument("--max-length", type=int, nargs="*", choices=MAX_LENGTHS)
    runner.add_argument("--lengths", nargs="*", choices=LENGTHS)
    runner.add_argument("--cpus", help="pin every trainer of the cell to these cores (taskset -c)")
    runner.add_argument("--force", action="store_true", help="re-run cells that have a result or a claim")
    filler = sub.add_parser("fill", help="re-run the trainers a cell lost and merge them in", parents=[])
    for action in runner._actions[1:]:  # the same filters as run
        filler._add_action(action)
    filler.add_argument("--micro-batch", type=int, help="per_device_train_batch_size of the re-run padded peers "
                        "(default: the cell's, 4); for peers the OOM killer ended")
    sub.add_parser("table", help="print the markdown table of every result")
    args = parser.parse_args(argv)
    return {"run": run, "fill": fill, "table": table}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
