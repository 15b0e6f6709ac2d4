"""The emulator as a child process for the benchmarks: started with a scenario, its endpoints read, and stopped; a failed
start raises with the child's own stderr instead of an empty path."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def emulator_process(scenario: str | Path, state_dir: str | Path, *extra: str, stop_timeout: float = 30) -> Iterator[dict[str, Any]]:
    """`with emulator_process(scenario, state_dir) as endpoints:` — the endpoints the emulator wrote (admin, arm, acr, …)."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    stderr_path = state / "emulator.stderr"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "emulator", "--scenario", str(scenario), "--state-dir", str(state), *extra],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            line = proc.stdout.readline().strip() if proc.stdout else ""
            if not line or not Path(line).is_file():
                proc.poll()
                tail = stderr_path.read_text()[-3000:].strip() or "(nothing on stderr)"
                raise RuntimeError(f"the emulator did not start (exit code {proc.returncode}, first stdout line {line!r}); "
                                   f"its stderr:\n{tail}")
            yield json.loads(Path(line).read_text())
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
