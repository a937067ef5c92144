"""Starts and stops a private Firestore emulator on a free loopback port."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

_STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(port: int) -> list[str]:
    """The emulator's own launcher if the SDK has it, else `gcloud`."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError("the Google Cloud CLI (gcloud) is not on PATH")
    sdk_root = pathlib.Path(os.path.realpath(gcloud)).parent.parent
    launcher = sdk_root / "platform/cloud-firestore-emulator/cloud_firestore_emulator"
    if launcher.exists():
        return [
            str(launcher),
            "start",
            "--host=127.0.0.1",
            f"--port={port}",
            "--database-mode=firestore-native",
        ]
    return [gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]


class Emulator:
    """One emulator process; `host` is what FIRESTORE_EMULATOR_HOST takes."""

    def __init__(self, log_path: pathlib.Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self._log_path, "ab")
        self._proc = subprocess.Popen(
            _command(self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the emulator exited; see {self._log_path}")
            if self.is_up():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the emulator did not start; see {self._log_path}")

    def is_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            # A paused emulator must run again to act on SIGTERM.
            os.killpg(self._proc.pid, signal.SIGCONT)
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None
        # The launcher can exit before the JVM it started has let go of the
        # port; stopped means nothing accepts connections there any more.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self._accepts():
            time.sleep(0.1)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def pause(self) -> None:
        """Freezes the emulator (SIGSTOP): connections stay open, nothing
        answers. Fault tests use this to stand for a Firestore that hangs."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Lets a paused emulator run again (SIGCONT)."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGCONT)

    def reset(self, project: str) -> None:
        """Deletes every document of the project's default database."""
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}"
            "/databases/(default)/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
