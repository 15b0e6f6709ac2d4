"""`python -m shared sweep`: run the reconcile sweep from a terminal (the same service, in this process), print the report."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from shared.settings import SettingsError

from .report import RENDERERS


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="stream every image the push events missed (existing images, dead-lettered events), or report what would be",
        description="Walk the registries in scope (AUTOPILOT_PUSH_REGISTRIES, or every registry in AUTOPILOT_SWEEP_SUBSCRIPTIONS), "
                    "newest tags first, and create the streaming artifact for each image that can stream and has none, within "
                    "AUTOPILOT_SWEEP_MAX_CONVERSIONS and AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS; what is left resumes next run.",
    )
    parser.add_argument("--registry", action="append", default=[], metavar="NAME",
                        help="sweep only this registry (name, login server or resource ID; repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--enforce", action="store_const", const="enforce", dest="mode", help="start conversions")
    mode.add_argument("--report", action="store_const", const="report", dest="mode",
                      help="start nothing, report what would be started (default: AUTOPILOT_SWEEP_MODE)")
    parser.add_argument("--format", choices=sorted(RENDERERS), default="table", help="output format (default table)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from shared import storage

    from .scope import UnknownRegistry
    from .service import SweepService

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        service = SweepService.from_env(use_storage=storage.configured())
        mode = args.mode or service.settings.mode
        if mode == "enforce" and not storage.configured():
            raise SettingsError("AzureWebJobsStorage", "is not set: --enforce needs the app's storage account (the per-image "
                                "leases, the resume state and the report live there); use --report to look without it")
        report = service.run_inline(args.registry, mode)
    except (SettingsError, UnknownRegistry) as exc:
        stderr.write(f"error: {exc}\n")
        return 2
    stdout.write(RENDERERS[args.format](report).rstrip("\n") + "\n")
    if any(t.status == "error" for t in report.registries) or any(t.failed for t in report.registries):
        return 1
    return 0
