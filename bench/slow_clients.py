"""Do a few slow clients stall an instance?

    python -m bench.slow_clients [--threads T]

Starts a private emulator and the function (gunicorn with T threads), then
for N = T - 1, T and 2T opens N connections that each send headers and
2 bytes of a 100-byte body and then wait, and times one ordinary call
(5 s limit) while they hang. Reports figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from bench.common import (
    PROJECT,
    PrpcClient,
    make_req,
    new_quest,
    private_emulator,
    store_for,
    workdir,
)
from dm.service import ExecutionService
from dm.store import ExecutionKey
from tools.function_server import FunctionServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)

    with workdir("dm-slow-") as work, private_emulator(work) as emulator:
        store = store_for(emulator.host, "slow")
        server = FunctionServer(
            emulator.host,
            "slow",
            work / "function.log",
            project=PROJECT,
            extra_env={"THREADS": str(args.threads)},
        )
        server.start()
        try:
            key = ExecutionKey(new_quest("slow"), 1, 1)
            token = ExecutionService(store).schedule(key)
            body = make_req(key, token).SerializeToString()
            for slow in (args.threads - 1, args.threads, 2 * args.threads):
                hanging = []
                for _ in range(slow):
                    sock = socket.create_connection(("127.0.0.1", server.port))
                    sock.sendall(
                        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"
                    )
                    hanging.append(sock)
                time.sleep(0.5)
                client = PrpcClient(server.port, timeout=5)
                started = time.monotonic()
                try:
                    status, code, _ = client.call(body)
                    outcome = f"{status} {code.name if code is not None else None}"
                except OSError as exc:
                    outcome = f"no answer ({type(exc).__name__})"
                took = time.monotonic() - started
                print(
                    f"{slow:3} slow clients on {args.threads} threads: "
                    f"{outcome} after {took:.3f} s"
                )
                client.close()
                for sock in hanging:
                    sock.close()
                time.sleep(0.5)
        finally:
            server.stop()
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
