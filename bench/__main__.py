"""`python -m bench [NAME...] [--quick] [--out DIR]`: threadedit's benchmarks.

Each prints a table with its figures, the issue's target and PASS/MISS (informational: timing
never fails the run; only a benchmark that could not run makes the exit status 1), and writes
`NAME.png`; all figures go to `results.json` in the output directory as well. Machine details
are printed first, since every figure depends on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fleet, memory, report, request_size, startup, throughput, turn_time
from bench.common import Run
from bench.processes import PROXY_VARS, REPO

Benchmark = Callable[[Run], Awaitable[dict[str, Any]]]
BENCHMARKS: dict[str, Benchmark] = {
    "turn_time": turn_time.run,
    "request_size": request_size.run,
    "throughput": throughput.run,
    "memory": memory.run,
    "startup": startup.run,
    "fleet": fleet.run,
}
NUMBERS = {str(n): name for n, name in enumerate(BENCHMARKS, 1)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"benchmarks to run, by name or number (default: all): "
                        f"{', '.join(f'{n}={name}' for n, name in NUMBERS.items())}")
    p.add_argument("--quick", action="store_true",
                   help="smaller runs (about a minute): fewer sessions and turns, shorter latency")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                   help="where charts and results.json go (default: bench/results)")
    p.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                   help="the store turn_time runs on: sqlite (default) or postgresql (the server "
                        "THREADEDIT_DATABASE_URL names, else a throwaway one started from Debian's "
                        "postgresql binaries)")
    p.add_argument("--first-answer-only", action="store_true",
                   help="fleet: run only its first-visible-answer rows (mentions at once on two "
                        "replicas), not throughput or the killed worker")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the temporary data directories and logs, and say where they are")
    return p


def _names(given: list[str]) -> list[str]:
    if not given:
        return list(BENCHMARKS)
    names = []
    for g in given:
        name = NUMBERS.get(g, g.replace("-", "_"))
        if name not in BENCHMARKS:
            raise SystemExit(f"No benchmark {g!r}; choose from {', '.join(BENCHMARKS)} "
                             f"(or 1-{len(BENCHMARKS)}).")
        names.append(name)
    return names


async def _run_all(names: list[str], run: Run) -> tuple[dict[str, Any], bool]:
    results: dict[str, Any] = {}
    ok = True
    for name in names:
        started = time.perf_counter()
        try:
            results[name] = await BENCHMARKS[name](run)
        except Exception as exc:  # one benchmark failing to run must not hide the others
            ok = False
            traceback.print_exc()
            print(f"ERROR: benchmark {name} could not run: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        print(f"({name} took {results[name]['seconds']:.1f} s)")
    return results, ok


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = _names(args.names)
    for var in PROXY_VARS:  # every connection is to 127.0.0.1
        os.environ.pop(var, None)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="threadedit-bench-"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info(REPO, work)
    report.print_machine(machine)
    print(f"Benchmarks: {', '.join(names)}{' (quick)' if args.quick else ''}; store {args.store}; "
          f"output in {out}")
    if args.quick:
        print("Quick run: smaller than the issue's configurations, so verdicts are indicative only.")
    started = time.perf_counter()
    try:
        results, ok = asyncio.run(_run_all(names, Run(work=work, out=out, quick=args.quick,
                                                       store=args.store,
                                                       first_answer_only=args.first_answer_only)))
    finally:
        if args.keep_work:
            print(f"Work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    document = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine,
                "quick": args.quick, "argv": sys.argv[1:], "seconds": round(total, 1),
                "benchmarks": results}
    (out / "results.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    print(f"\nAll done in {total:.0f} s; figures in {out / 'results.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
