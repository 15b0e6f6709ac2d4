"""`python -m shared audit`: run the node pool audit from a terminal (report or enforce), print the table, JSON or Markdown."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, TextIO

from shared.settings import SettingsError

from .report import RENDERERS
from .settings import AuditSettings, parse_subscription_id


class ProgressBar:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a terminal (logs, pipes, CI)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        line = f"\r{phase:<12} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if line != self._last:
            self.stream.write(line)
            self.stream.flush()
            self._last = line

    def close(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r" + " " * len(self._last) + "\r")
            self.stream.flush()


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="audit AKS node pools for artifact streaming (report, or --enforce to enable it where safe)",
        description="Classify every node pool (compliant, remediable, ineligible, busy, stopped, excluded) and, with "
                    "--enforce, enable artifact streaming on remediable pools within the AUTOPILOT_AUDIT_* safety limits.",
    )
    parser.add_argument("--enforce", action="store_true", help="enable streaming on remediable pools (default: report only)")
    parser.add_argument("--subscription", action="append", default=[], metavar="ID",
                        help="audit this subscription (repeatable); default AUTOPILOT_AUDIT_SUBSCRIPTIONS or all readable")
    parser.add_argument("--format", choices=sorted(RENDERERS), default="table", help="output format (default table)")
    parser.add_argument("--no-store", action="store_true", help="do not write the report to Blob Storage")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from .service import AUTO, run_audit

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        settings = AuditSettings.from_env()
        changes: dict[str, Any] = {}
        if args.enforce:
            changes["mode"] = "enforce"
        if args.subscription:
            changes["subscriptions"] = tuple(parse_subscription_id(s, "--subscription") for s in args.subscription)
        settings = dataclasses.replace(settings, **changes)
    except SettingsError as exc:
        stderr.write(f"error: {exc}\n")
        return 2
    bar = ProgressBar(stderr)
    try:
        report = run_audit(settings, store=None if args.no_store else AUTO, progress=bar)
    except SettingsError as exc:
        bar.close()
        stderr.write(f"error: {exc}\n")
        return 2
    bar.close()
    stdout.write(RENDERERS[args.format](report).rstrip("\n") + "\n")
    if report.locations:
        stderr.write(f"report stored: {report.locations['json']} and {report.locations['latest_markdown']}\n")
    if report.summary.total and report.summary.by_state.get("error", 0) == report.summary.total:
        return 3  # nothing could be read: credentials, role assignments or the ARM endpoint are wrong
    return 1 if report.summary.failures else 0
