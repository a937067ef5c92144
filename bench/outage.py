"""How long callers wait for UNAVAILABLE while Firestore is out.

    python -m bench.outage [--callers N] [--threads T] [--mode stop|freeze]

Starts a private emulator and the function (gunicorn with T threads), makes
the instance warm, then takes storage away: `stop` kills the emulator
(connections are refused), `freeze` stops it with SIGSTOP (connections hang,
nothing answers). N callers then call at once; their replies and waits are
printed and written as JSON. Storage is restored and one more call shows
that the same instance recovers. Reports figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter

from bench.common import (
    PROJECT,
    PrpcClient,
    make_req,
    new_quest,
    private_emulator,
    store_for,
    workdir,
)
from dm.rpc import Code
from dm.service import ExecutionService
from dm.store import ExecutionKey, StoreError
from tools.function_server import FunctionServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=24)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--mode", choices=["stop", "freeze"], default="stop")
    parser.add_argument("--json", default="bench-results-outage.json")
    args = parser.parse_args(argv)

    with workdir("dm-outage-") as work, private_emulator(work) as emulator:
        store = store_for(emulator.host, "outage")
        service = ExecutionService(store)
        server = FunctionServer(
            emulator.host,
            "outage",
            work / "function.log",
            project=PROJECT,
            extra_env={"THREADS": str(args.threads)},
        )
        server.start()
        try:
            key = ExecutionKey(new_quest("outage"), 1, 1)
            token = service.schedule(key)
            PrpcClient(server.port).call(make_req(key, token).SerializeToString())
            bodies = [
                make_req(key, token).SerializeToString() for _ in range(args.callers)
            ]

            if args.mode == "stop":
                emulator.stop()
            else:
                emulator.pause()
            waits: list[float] = [0.0] * args.callers
            codes: list[str] = [""] * args.callers

            def call(i: int) -> None:
                client = PrpcClient(server.port, timeout=300)
                started = time.monotonic()
                status, code, _ = client.call(bodies[i])
                waits[i] = round(time.monotonic() - started, 3)
                codes[i] = code.name if code is not None else f"HTTP {status}"
                client.close()

            threads = [
                threading.Thread(target=call, args=(i,)) for i in range(args.callers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

            if args.mode == "stop":
                emulator.start()
            else:
                emulator.resume()
            recovery = _recover(service, server.port)
        finally:
            server.stop()
            store.close()

    result = {
        "args": vars(args),
        "codes": dict(Counter(codes)),
        "waits_s": sorted(waits),
        "slowest_s": max(waits),
        "recovery": recovery,
    }
    with open(args.json, "w") as out:
        json.dump(result, out, indent=2)
    print(
        f"{args.mode}: {args.callers} callers on {args.threads} threads: "
        f"{result['codes']}, slowest {result['slowest_s']} s"
    )
    print(f"waits (s): {result['waits_s']}")
    print(f"recovery: {recovery}")
    return 0


def _recover(service: ExecutionService, port: int) -> dict[str, object]:
    """Schedules a fresh Execution once storage answers, then re-sends one
    activation, as a pRPC client does, until OK (bounded)."""
    started = time.monotonic()
    key = ExecutionKey(new_quest("back"), 1, 1)
    while True:
        try:
            token = service.schedule(key)
            break
        except StoreError:
            if time.monotonic() - started > 30:
                return {"ok": False, "reason": "storage never came back"}
            time.sleep(0.2)
    body = make_req(key, token).SerializeToString()
    client = PrpcClient(port, timeout=30)
    attempts = 0
    began = time.monotonic()
    while time.monotonic() - began < 30:
        attempts += 1
        _, code, _ = client.call(body)
        if code is Code.OK:
            return {
                "ok": True,
                "attempts": attempts,
                "seconds": round(time.monotonic() - began, 3),
            }
        time.sleep(0.2)
    return {"ok": False, "attempts": attempts}


if __name__ == "__main__":
    sys.exit(main())
