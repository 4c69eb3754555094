"""`oversight serve` as a child process, as an operator runs it, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)  # stderr lines after "listening"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as an orchestrator would; kill if it will not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_serve(settings: dict[str, str], *, timeout: float = 60.0) -> Served:
    """Start it with these OVERSIGHT_* settings (and no inherited ones); wait until it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    env.update(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            served = Served(proc, int(m.group(1)))
            # Keep reading, so a chatty log can never fill the pipe and stall the proxy.
            threading.Thread(target=_drain, args=(proc, served.log), daemon=True).start()
            return served
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("oversight serve did not start:\n" + "".join(seen)[-3000:])


def _drain(proc: subprocess.Popen[str], log: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        log.append(line)
