"""The audit report: JSON for machines, Markdown for people, a text table for terminals; stored in Blob Storage."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from .model import STATES, AuditReport, PendingRemediation, ReportRow

log = logging.getLogger("autopilot.audit.report")

COLUMNS = (
    ("subscription", lambda r: r.subscription_name or r.subscription_id),
    ("resource group", lambda r: r.resource_group),
    ("cluster", lambda r: r.cluster),
    ("pool", lambda r: r.pool),
    ("os", lambda r: "/".join(x for x in (r.os_type, r.os_sku) if x)),
    ("k8s", lambda r: r.kubernetes_version or ""),
    ("state", lambda r: r.state),
    ("reason", lambda r: r.reason),
    ("action", lambda r: r.action),
    ("outcome", lambda r: r.outcome),
)


def sort_rows(rows: list[ReportRow]) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (r.subscription_id, r.resource_group.lower(), r.cluster.lower(), r.pool.lower()))


def render_json(report: AuditReport) -> str:
    return json.dumps(report.as_dict(), indent=2, sort_keys=False)


def _cells(row: ReportRow) -> list[str]:
    return [str(get(row)) for _, get in COLUMNS]


def render_table(report: AuditReport, max_width: int = 48) -> str:
    """A fixed-width table for terminals, then the summary."""
    rows = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in _cells(r)] for r in report.rows]
    headers = [name for name, _ in COLUMNS]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines)


def summary_line(report: AuditReport) -> str:
    counts = ", ".join(f"{s} {report.summary.by_state.get(s, 0)}" for s in STATES)
    extra = f"; {report.note}" if report.note else ""
    return (f"{report.summary.total} pool row(s), mode {report.effective_mode}: {counts}; "
            f"remediations started {report.summary.remediations_started}, failures {report.summary.failures}{extra}")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: AuditReport) -> str:
    s = report.summary
    out = [
        f"# Artifact streaming audit {report.started_at}",
        "",
        f"Run `{report.run_id}`, mode **{report.effective_mode}**"
        + (f" (configured {report.mode})" if report.mode != report.effective_mode else "")
        + f", finished {report.finished_at}.",
    ]
    if report.note:
        out += ["", f"> {_md(report.note)}"]
    if s.stopped_early:
        out += ["", f"> **Stopped early:** {_md(s.stopped_early)}"]
    out += ["", "## Summary", "", "| state | pools |", "|---|---:|"]
    out += [f"| {state} | {s.by_state.get(state, 0)} |" for state in STATES]
    out += [f"| **total** | **{s.total}** |", "", "Remediations started: "
            f"{s.remediations_started}; failures: {s.failures}.", "", "### Per subscription", ""]
    out += ["| subscription | " + " | ".join(STATES) + " |", "|---|" + "---:|" * len(STATES)]
    names = {r.subscription_id: r.subscription_name for r in report.rows}
    for sub, counts in sorted(s.by_subscription.items()):
        label = f"{names.get(sub) or ''} `{sub}`".strip()
        out.append(f"| {_md(label)} | " + " | ".join(str(counts.get(st, 0)) for st in STATES) + " |")
    out += ["", "## Node pools", "", "| " + " | ".join(n for n, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(_md(c) for c in _cells(r)) + " |" for r in report.rows]
    if report.pending:
        out += ["", "## Remediations to verify next run", ""]
        out += [f"- `{p.resource_id}` (started {p.started_at})" for p in report.pending]
    return "\n".join(out) + "\n"


RENDERERS = {"json": render_json, "markdown": render_markdown, "table": render_table}


@dataclass
class ReportStore:
    """Blob Storage for reports and the pending-remediation state, in one container of the app's storage account."""

    service: Any  # azure.storage.blob.BlobServiceClient
    container: str
    shard_suffix: str = ""  # "-shard-1-of-4" when the estate is sharded: each shard keeps its own latest and state
    _created: bool = False

    def _container(self) -> Any:
        from azure.core.exceptions import ResourceExistsError

        client = self.service.get_container_client(self.container)
        if not self._created:
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            self._created = True
        return client

    def write_report(self, report: AuditReport) -> dict[str, str]:
        """Write JSON and Markdown under `reports/YYYY/MM/DD/` and as `latest`; returns the blob names."""
        from azure.storage.blob import ContentSettings

        container = self._container()
        day = report.started_at[:10].replace("-", "/")
        stamp = report.started_at[11:19].replace(":", "")
        base = f"reports/{day}/{stamp}-{report.run_id}{self.shard_suffix}"
        names = {
            "json": f"{base}.json",
            "markdown": f"{base}.md",
            "latest_json": f"latest{self.shard_suffix}.json",
            "latest_markdown": f"latest{self.shard_suffix}.md",
        }
        bodies = {"json": render_json(report), "markdown": render_markdown(report)}
        types = {"json": "application/json", "markdown": "text/markdown; charset=utf-8"}
        for key, name in names.items():
            kind = "json" if key.endswith("json") else "markdown"
            container.upload_blob(name, bodies[kind].encode(), overwrite=True,
                                  content_settings=ContentSettings(content_type=types[kind]))
        return names

    @property
    def pending_blob(self) -> str:
        return f"state/pending{self.shard_suffix}.json"

    def load_pending(self) -> list[PendingRemediation]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            raw = self._container().download_blob(self.pending_blob).readall()
        except ResourceNotFoundError:
            return []
        try:
            items = json.loads(raw)["pending"]
            return [PendingRemediation(**{k: item[k] for k in PendingRemediation.__dataclass_fields__}) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s/%s: %s", self.container, self.pending_blob, exc)
            return []

    def save_pending(self, pending: list[PendingRemediation]) -> None:
        body = json.dumps({"pending": [p.as_dict() for p in pending]}, indent=2).encode()
        self._container().upload_blob(self.pending_blob, body, overwrite=True)
