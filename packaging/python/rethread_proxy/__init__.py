"""rethread: a reverse proxy that makes OpenAI Responses API follow-ups whole.

The wheel carries the ``rethread`` binary (a static Linux build): ``rethread --upstream …`` runs
it from the command line, and :func:`start` runs it from Python for as long as you need it::

    import rethread_proxy
    from openai import OpenAI

    with rethread_proxy.start() as proxy:
        client = OpenAI(base_url=proxy.base_url)
        ...

Settings are the binary's flags with ``_`` for ``-``: ``start(store="redis://…",
fallback_retries=0)`` runs ``rethread --store redis://… --fallback-retries 0``.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Optional

__all__ = ["Rethread", "RethreadError", "binary", "start"]
__version__ = "0.1.0"

DEFAULT_UPSTREAM = "https://api.openai.com"


class RethreadError(RuntimeError):
    """rethread could not be started; the message ends with what its process said."""


def binary() -> str:
    """The path of the ``rethread`` binary this package carries."""
    path = Path(__file__).parent / "bin" / "rethread"
    if not path.is_file():
        raise RethreadError(f"the rethread binary is missing from the package: {path}")
    return str(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flags(settings: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in settings.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            value = "true" if value else "false"
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            args += [flag, str(v)]
    return args


class Rethread:
    """A running rethread process. ``base_url`` ends in ``/v1``, ready for ``OpenAI(base_url=…)``."""

    def __init__(self, process: "subprocess.Popen[bytes]", port: int, log: IO[bytes]) -> None:
        self._process = process
        self._log = log
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the process (SIGTERM, then SIGKILL after ``timeout`` seconds). Idempotent."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def output(self) -> str:
        """What the process has written to its standard error so far (its log)."""
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def __enter__(self) -> "Rethread":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Rethread(base_url={self.base_url!r})"


def start(upstream: str = DEFAULT_UPSTREAM, *, timeout: float = 10.0, **settings: Any) -> Rethread:
    """Starts rethread in front of ``upstream`` on a free local port and waits until it serves.

    ``settings`` are rethread's flags with ``_`` for ``-`` (``fallback_retries=0``). The process
    stops with :meth:`Rethread.stop`, at the end of a ``with`` block, or when Python exits.
    Raises :class:`RethreadError` naming what failed and the tail of the process's output.
    """
    port = _free_port()
    args = [binary(), "--listen", f"127.0.0.1:{port}", "--upstream", upstream, *_flags(settings)]
    log = tempfile.NamedTemporaryFile(prefix="rethread-", suffix=".log", delete=False)
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    proxy = Rethread(process, port, log)
    atexit.register(proxy.stop)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = proxy.output()[-2000:]
            proxy.stop()
            raise RethreadError(f"rethread exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{proxy.url}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return proxy
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            tail = proxy.output()[-2000:]
            proxy.stop()
            raise RethreadError(f"rethread did not answer /healthz within {timeout} s:\n{tail}")
        time.sleep(0.05)


