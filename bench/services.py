"""What the benchmarks share: a free port, and an nx-27017 MongoDB-wire server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NxServer:
    """nx-27017 keeping its databases under `workdir`; stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.executable = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")

    def __enter__(self) -> NxServer:
        (self.workdir / "mongo").mkdir(parents=True, exist_ok=True)
        # Absolute paths and a pid file of its own: the daemon changes directory.
        subprocess.run(
            [
                self.executable,
                "-d",
                "--data-dir",
                str(self.workdir / "mongo"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pid-file",
                str(self.workdir / "nx.pid"),
                "--log-file",
                str(self.workdir / "nx.log"),
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"nx-27017 did not start: {self.workdir / 'nx.log'}")

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [self.executable, "--stop", "--pid-file", str(self.workdir / "nx.pid")],
            check=False,
            capture_output=True,
        )
