"""Operator CLI: `python -m shared stream …` (push path), `python -m shared audit …` (audit path), `python -m shared sweep …`."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared", description="Artifact Streaming Autopilot operator CLI")
    parser.add_argument("-v", "--verbose", action="store_true", help="log HTTP traffic summaries and decisions")
    commands = parser.add_subparsers(dest="command", required=True)
    from .audit import cli as audit_cli
    from .push import cli as push_cli
    from .sweep import cli as sweep_cli

    push_cli.add_parser(commands)
    audit_cli.add_parser(commands)
    sweep_cli.add_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
