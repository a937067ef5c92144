"""Runs the function as deployed: functions-framework's gunicorn stack on a
free loopback port, pointed at a Firestore emulator."""

from __future__ import annotations

import http.client
import os
import pathlib
import subprocess
import sys
import time

from tools.emulator import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
_NO_METADATA = {
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "NO_GCE_CHECK": "True",
}


class FunctionServer:
    """The function under functions-framework's gunicorn stack, as deployed."""

    def __init__(
        self,
        emulator_host: str,
        collection: str,
        log_path: pathlib.Path,
        project: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.project = project
        self._extra_env = extra_env or {}
        self.collection = collection
        self._emulator_host = emulator_host
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": self._emulator_host,
            "DM_EXECUTIONS_COLLECTION": self.collection,
            **self._extra_env,
        }
        env.pop("DM_FIRESTORE_DATABASE", None)
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        # Should anything ask for default credentials, the metadata probe
        # goes to a closed loopback port, never off the machine.
        env.update(_NO_METADATA)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--target",
                "activate_execution",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=open(self._log_path, "wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the function exited; see {self._log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the function did not start")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
