"""Azurite (the Azure Storage emulator from npm) as child processes, for the app's own storage account: blobs and queues."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("blob", "queue")  # the Functions host's storage needs both (queue triggers poll queues)


def find_azurite(service: str = "blob") -> str | None:
    local = REPO_ROOT / "node_modules" / ".bin" / f"azurite-{service}"
    if local.exists():
        return str(local)
    return shutil.which(f"azurite-{service}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite:
    """Starts azurite-blob and azurite-queue on free loopback ports, in memory; `connection_string` points the SDKs at both."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def port(self) -> int:
        """The blob service's port."""
        return self.ports.get("blob", 0)

    @property
    def queue_port(self) -> int:
        return self.ports.get("queue", 0)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
        )

    def start(self) -> Azurite:
        try:
            for service in SERVICES:
                self._start_service(service)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_service(self, service: str) -> None:
        exe = find_azurite(service)
        if exe is None:
            raise RuntimeError(f"Azurite ({service}) is not installed: run `npm ci` in the repository (make setup does it)")
        for _ in range(5):
            port = _free_port()
            proc = subprocess.Popen(
                [exe, f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port), "--inMemoryPersistence",
                 "--silent", "--skipApiVersionCheck", "--loose"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NODE_NO_WARNINGS": "1"},
                cwd=tempfile.gettempdir(),  # Azurite writes its debug/extent files relative to the working directory
            )
            self._procs[service], self.ports[service] = proc, port
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.05)
            self._stop_one(service)
        raise RuntimeError(f"Azurite ({service}) did not start listening within 20 s")

    def _stop_one(self, service: str) -> None:
        proc = self._procs.pop(service, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def stop(self) -> None:
        for service in list(self._procs):
            self._stop_one(service)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
