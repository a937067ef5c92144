"""The load run: many Executions, each raced over HTTP, all at once.

    python -m bench.load [--executions N] [--json PATH]

Each Execution is raced by 3 tasks with different ExecutionTokens. Every
task's request is sent three times at once (the original and 2 identical
retries), so whichever task wins, 2 identical retries of the winner run
concurrently with the race; once a winner answers OK, 2 more identical
retries of it follow. All Executions are in flight together, through a pool
of client connections. Then every stored Execution is read back.

The run passes when each Execution has exactly one winning ExecutionToken,
every copy and retry of the winner is OK, every copy of a loser is
ALREADY_EXISTS, no reply is 5xx or lacks X-Prpc-Grpc-Code, and the stored
winner is the one the replies named. The exit status is 1 otherwise. The
request loop is bounded in count and in time (--max-seconds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import secrets
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    PROJECT,
    PrpcClient,
    make_req,
    new_quest,
    private_emulator,
    sha256,
    store_for,
    summarize,
    workdir,
)
from dm.rpc import Code
from dm.service import ExecutionService
from dm.store import ExecutionKey
from tools.function_server import FunctionServer


@dataclass
class Execution:
    key: ExecutionKey
    bodies: list[bytes]  # one per racing task
    tokens: list[bytes]  # their ExecutionTokens
    # (task index, phase, code or None, HTTP status) for every reply.
    replies: list[tuple[int, str, Code | None, int]] = field(default_factory=list)
    winner_seen: bool = False


def run_load(
    port: int,
    executions: list[Execution],
    *,
    workers: int,
    copies: int,
    followups: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Sends every request through `workers` persistent connections."""
    tasks: queue.Queue[tuple[Execution, int, str] | None] = queue.Queue()
    lock = threading.Lock()
    latencies: list[float] = []
    transport_errors: Counter[str] = Counter()
    dropped = [0]
    deadline = time.monotonic() + max_seconds

    # Each Execution's requests sit next to one another in the queue, so
    # that free workers pick them up together and they really race.
    for execution in executions:
        for task in range(len(execution.bodies)):
            for _ in range(copies):
                tasks.put((execution, task, "race"))

    def worker() -> None:
        client = PrpcClient(port, timeout=30)
        try:
            while True:
                item = tasks.get()
                if item is None:
                    tasks.task_done()
                    return
                execution, task, phase = item
                try:
                    if time.monotonic() > deadline:
                        with lock:
                            dropped[0] += 1
                        continue
                    started = time.perf_counter()
                    try:
                        status, code, _ = client.call(execution.bodies[task])
                    except Exception as exc:
                        with lock:
                            transport_errors[type(exc).__name__] += 1
                            execution.replies.append((task, phase, None, 0))
                        continue
                    took = time.perf_counter() - started
                    with lock:
                        latencies.append(took)
                        execution.replies.append((task, phase, code, status))
                        first_win = code is Code.OK and not execution.winner_seen
                        if first_win:
                            execution.winner_seen = True
                    if first_win:
                        for _ in range(followups):
                            tasks.put((execution, task, "retry"))
                finally:
                    tasks.task_done()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    tasks.join()
    elapsed = time.monotonic() - started
    for _ in threads:
        tasks.put(None)
    for thread in threads:
        thread.join(timeout=60)
    return {
        "elapsed_s": round(elapsed, 3),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed else None,
        "latency": summarize(latencies) if latencies else None,
        "transport_errors": dict(transport_errors),
        "dropped_after_deadline": dropped[0],
    }


def check(executions: list[Execution], store: Any) -> dict[str, Any]:
    """Checks every reply and the stored state against one another."""
    violations: list[str] = []
    codes: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for n, execution in enumerate(executions):
        by_task: dict[int, set[str]] = defaultdict(set)
        for task, _phase, code, status in execution.replies:
            name = code.name if code is not None else "NO_CODE"
            codes[name] += 1
            statuses[status] += 1
            by_task[task].add(name)
            if status >= 500 or status == 0:
                violations.append(f"execution {n}: HTTP {status} ({name})")
        winners = [t for t, names in by_task.items() if "OK" in names]
        if len(winners) != 1:
            violations.append(f"execution {n}: {len(winners)} winning tokens")
            continue
        winner = winners[0]
        if by_task[winner] != {"OK"}:
            violations.append(
                f"execution {n}: the winner also got {sorted(by_task[winner])}"
            )
        for task, names in by_task.items():
            if task != winner and names != {"ALREADY_EXISTS"}:
                violations.append(f"execution {n}: loser {task} got {sorted(names)}")
        snapshot = store.get(execution.key, timeout=5)
        stored = snapshot.fields if snapshot else {}
        if stored.get("state") != 1 or stored.get("execution_token_sha256") != sha256(
            execution.tokens[winner]
        ):
            violations.append(f"execution {n}: stored state does not match replies")
    return {
        "codes": dict(codes),
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "violations": violations[:50],
        "violation_count": len(violations),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--racers", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3, help="sends of each racer")
    parser.add_argument("--followups", type=int, default=2)
    parser.add_argument("--workers", type=int, default=48)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--emulator-host", help="use this emulator, not a new one")
    parser.add_argument("--json", default="bench-results-load.json")
    args = parser.parse_args(argv)

    with workdir("dm-load-") as work:
        if args.emulator_host:
            result = _run(args, args.emulator_host, work)
        else:
            with private_emulator(work) as emulator:
                result = _run(args, emulator.host, work)

    with open(args.json, "w") as out:
        json.dump(result, out, indent=2, default=str)
    load, verdict = result["load"], result["check"]
    print(
        f"{args.executions} Executions x {args.racers} racers x {args.copies} "
        f"copies + {args.followups} retries of each winner: "
        f"{load['requests']} requests in {load['elapsed_s']} s "
        f"({load['requests_per_s']}/s) over {args.workers} connections"
    )
    if load["latency"]:
        lat = load["latency"]
        print(
            f"latency ms: median {lat['median_ms']}, p90 {lat['p90_ms']}, "
            f"p99 {lat['p99_ms']}, max {lat['max_ms']}"
        )
    print(f"codes {verdict['codes']}; HTTP {verdict['http_statuses']}")
    print(
        f"transport errors {load['transport_errors']}; "
        f"dropped after deadline {load['dropped_after_deadline']}"
    )
    ok = (
        verdict["violation_count"] == 0
        and not load["transport_errors"]
        and not load["dropped_after_deadline"]
    )
    for line in verdict["violations"]:
        print(f"  violation: {line}")
    print(("PASS" if ok else "FAIL") + f"; figures written to {args.json}")
    return 0 if ok else 1


def _run(args: argparse.Namespace, emulator_host: str, work: Any) -> dict[str, Any]:
    collection = f"load_{secrets.token_hex(4)}"
    store = store_for(emulator_host, collection)
    service = ExecutionService(store)
    server = FunctionServer(
        emulator_host, collection, work / "function.log", project=PROJECT
    )
    server.start()
    try:
        executions = []
        for _ in range(args.executions):
            key = ExecutionKey(new_quest("load"), 1, 1)
            token = service.schedule(key)
            reqs = [make_req(key, token) for _ in range(args.racers)]
            executions.append(
                Execution(
                    key=key,
                    bodies=[r.SerializeToString() for r in reqs],
                    tokens=[r.execution_token for r in reqs],
                )
            )
        load = run_load(
            server.port,
            executions,
            workers=args.workers,
            copies=args.copies,
            followups=args.followups,
            max_seconds=args.max_seconds,
        )
        verdict = check(executions, store)
    finally:
        server.stop()
        store.close()
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "cpus": os.cpu_count(),
        "load": load,
        "check": verdict,
    }


if __name__ == "__main__":
    sys.exit(main())
