"""Real servers for client, browser and security tests: uvicorn in a background thread
(:func:`serve`), or a whole ``reid-serve`` process that can be signalled and killed
(:func:`serve_process`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serve(app: FastAPI, timeout: float = 30.0, **config: object) -> Iterator[str]:
    """Run ``app`` on a free port (bound before start: no race); yields its base URL.
    ``config`` goes to ``uvicorn.Config`` (``ssl_certfile``/``ssl_keyfile`` make it https)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    scheme = "https" if config.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (Linux /proc):
    on a shared machine another program may take a free port first, and answer /readyz."""
    wanted = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        inodes = {f"socket:[{r.split()[9]}]" for r in rows if r.split()[1] == wanted and r.split()[3] == "0A"}
        fds = Path(f"/proc/{pid}/fd")
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    except OSError:
        return False


@contextlib.contextmanager
def serve_process(args: list[str], env: dict[str, str] | None = None, timeout: float = 90.0,
                  output_path: Path | None = None,
                  cafile: Path | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``reid-serve ARGS --port <free>`` as its own process (this checkout first on the
    path; its output to ``output_path`` when given); yields (base URL, process) once it listens
    and /readyz answers (over https trusting ``cafile`` when given). A port taken by another
    program meanwhile means a new port and a new start. Stopped with SIGTERM (SIGKILL after
    10 s) unless the test has ended it."""
    code = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(cafile)) if cafile else True
    deadline = time.monotonic() + timeout
    for _attempt in range(3):
        port = _free_port()
        # A file, not a pipe: nobody has to keep reading it.
        output = open(output_path, "w+b") if output_path is not None else tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=output, stderr=subprocess.STDOUT,
        )
        url = f"{'https' if cafile else 'http'}://127.0.0.1:{port}"
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if _listens(proc.pid, port):
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(url + "/readyz", timeout=1.0, verify=verify).status_code == 200:
                            break
                time.sleep(0.1)
            else:
                output.seek(0)
                said = output.read().decode(errors="replace")
                if proc.poll() is not None and ("cannot listen" in said or "already in use" in said):
                    continue  # the port went to another program: try another
                raise RuntimeError(f"reid-serve did not become ready (exit {proc.poll()}):\n{said}")
            yield url, proc
            return
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            output.close()
    raise RuntimeError("reid-serve found no free port in three tries")
