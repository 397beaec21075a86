"""The fault suite's long version: `python -m tests.faults` (or `make faults`).

Each fault lasts --seconds (10 by default) under a load of --clients connections, with
fastpost's own defaults for its timeouts and its bound on requests in flight; the overload
runs --connections connections on `GET /feed`. Prints each row as its scenario ends, then
the table (README, "Reliability"). Run it on a quiet machine: the p99 column is a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import shutil
import sys
import tempfile
from pathlib import Path

from tests.faults.harness import LONG, SCENARIOS, FaultLab, Profile, fault_lab, run_scenario, table


async def run_all(lab: FaultLab, names: list[str], profile: Profile) -> None:
    for name in names:
        run = await run_scenario(lab, SCENARIOS[name], profile)
        row = run.row()
        lab.rows.append(row)
        print(row, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--seconds", type=float, default=LONG.seconds, help="fault length")
    parser.add_argument("--clients", type=int, default=LONG.clients, help="mixed-load clients")
    parser.add_argument(
        "--connections", type=int, default=LONG.overload_connections, help="overload connections"
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    profile = dataclasses.replace(
        LONG,
        seconds=args.seconds,
        after_seconds=max(LONG.after_seconds, args.seconds),
        clients=args.clients,
        overload_connections=args.connections,
    )
    # A thousand connections need as many descriptors here, and in the server's workers
    # (started below, they inherit the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * args.connections + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    work = Path(tempfile.mkdtemp(prefix="fastpost-faults-"))
    try:
        with fault_lab(work, profile) as lab:
            print(table([]), flush=True)
            asyncio.run(run_all(lab, names, profile))
            print("\n" + table(lab.rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
