"""A server subprocess for the HTTP benchmarks: a free loopback port, waiting for /health,
and a clean stop. Loopback only, always."""
from __future__ import annotations

import socket
import subprocess
import time

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Return once ``url``/health answers 200; raise RuntimeError if the process exits or
    ``timeout`` seconds pass first."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become healthy in time")


def stop(proc: subprocess.Popen, log=None, timeout: float = 30) -> None:
    """SIGTERM (graceful shutdown), SIGKILL if it does not exit in ``timeout`` s; close the log."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    if log is not None:
        log.close()
