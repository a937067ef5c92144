"""The main job, end to end on this machine.

Starts a private Firestore emulator and the function (functions-framework,
the same server stack as deployed), schedules an Execution, and activates
it over HTTP four ways: the first activation, an identical retry, a rival
task with another ExecutionToken, and a caller with a wrong activation
token. Stops everything it started, whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid

from tools.emulator import Emulator
from tools.function_server import FunctionServer

ROOT = pathlib.Path(__file__).resolve().parent.parent

PY = sys.executable


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"$ python -m dm {shown}", flush=True)
    result = subprocess.run(
        [PY, "-m", "dm", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    for line in (result.stdout + result.stderr).splitlines():
        print(f"  {line}")
    print(f"  (exit status {result.returncode})", flush=True)
    return result


def main() -> int:
    work = pathlib.Path(tempfile.mkdtemp(prefix="dm-demo-"))
    emulator = Emulator(work / "emulator.log")
    server: FunctionServer | None = None
    try:
        step(f"starting the Firestore emulator on 127.0.0.1:{emulator.port}")
        emulator.start()

        server = FunctionServer(
            emulator.host, "dm_executions", work / "function.log", project="demo-dm"
        )
        step(f"starting the function on {server.url}")
        server.start()
        url = server.url
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": "demo-dm",
            "FIRESTORE_EMULATOR_HOST": emulator.host,
            "DM_EXECUTIONS_COLLECTION": "dm_executions",
        }

        quest = f"demo-{uuid.uuid4().hex[:8]}"
        ident = ["--quest", quest, "--attempt", "1", "--execution", "1"]
        auth_file, token_file = work / "auth.json", work / "execution.token"

        step("the scheduler creates an Execution; this Auth goes to the distributor")
        result = run(env, "schedule", *ident, "--start-timeout", "600")
        auth_file.write_text(result.stdout)

        step("1. the task starts and activates: OK")
        first = run(
            env,
            "activate",
            "--url",
            url,
            "--auth-file",
            str(auth_file),
            "--execution-token-file",
            str(token_file),
        )

        step("2. the same task retries with the same ExecutionToken: OK again")
        retry = run(
            env,
            "activate",
            "--url",
            url,
            "--auth-file",
            str(auth_file),
            "--execution-token-file",
            str(token_file),
        )

        step("3. a duplicate of the task races in with its own token: ALREADY_EXISTS")
        rival = run(env, "activate", "--url", url, "--auth-file", str(auth_file))

        step("4. a caller with a wrong activation token: PERMISSION_DENIED")
        wrong = json.loads(auth_file.read_text())
        wrong["token"] = base64.b64encode(os.urandom(32)).decode()
        wrong_file = work / "wrong.json"
        wrong_file.write_text(json.dumps(wrong))
        denied = run(env, "activate", "--url", url, "--auth-file", str(wrong_file))

        step("the Execution as stored (no tokens, ever)")
        run(env, "show", *ident)

        step("the function's log lines for those four calls")
        for line in (work / "function.log").read_text().splitlines():
            # Skip the readiness probe's GET; keep the four activations.
            if line.startswith("{") and '"message": "POST ' in line:
                print(f"  {line}")

        codes = [
            first.returncode,
            retry.returncode,
            rival.returncode,
            denied.returncode,
        ]
        expected = [0, 0, 5, 4]
        step(f"exit statuses {codes}, expected {expected}")
        return 0 if codes == expected else 1
    finally:
        step("stopping the function and the emulator")
        if server is not None:
            server.stop()
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
