"""`python -m emulator --scenario FILE [--state-dir DIR]`: run the local Azure until interrupted."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .runtime import Emulator
from .scenario import ScenarioError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--scenario", required=True, help="scenario YAML (see emulator/scenarios/)")
    parser.add_argument("--state-dir", help="where endpoints.json, the CA and dead letters go (default: a temp dir)")
    parser.add_argument("--azurite", action="store_true", help="also start Azurite and add AzureWebJobsStorage to env")
    parser.add_argument("--print-env", action="store_true", help="print `export` lines for the app's settings")
    args = parser.parse_args(argv)
    stop = threading.Event()
    # Handlers first: whoever reads the endpoints path may signal us the moment it is printed.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        emu = Emulator(args.scenario, state_dir=args.state_dir, azurite=args.azurite).start()
    except (ScenarioError, RuntimeError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    print(str(emu.endpoints_path), flush=True)
    if args.print_env:
        for key, value in emu.env.items():
            print(f"export {key}={json.dumps(value)}", flush=True)
    try:
        stop.wait()
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
