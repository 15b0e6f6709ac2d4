"""The audit report: JSON for machines, Markdown for people, a text table for terminals; stored in Blob Storage."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .model import STATES, AuditReport, PendingRemediation, ReportRow, Tally

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


ROWS_PER_CHUNK = 2000  # rows encoded per call of the JSON encoder (and per Markdown chunk)
BLOCK_BYTES = 4 * 1024 * 1024  # block size of the streamed uploads (a block blob takes up to 50,000 of them)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def chunked(rows: list[ReportRow], size: int = ROWS_PER_CHUNK) -> Iterator[list[ReportRow]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def json_head(report: AuditReport) -> str:
    """Everything before the rows: `{"run_id":…,"summary":{…},"rows":[` (the key order of AuditReport.as_dict)."""
    head = {k: v for k, v in report.as_dict(rows=False).items() if k not in ("rows", "pending")}
    return _compact(head)[:-1] + ',"rows":['


def json_rows(rows: list[ReportRow]) -> str:
    """Rows as comma-separated JSON objects: one call of the C encoder per chunk, no indentation."""
    return _compact([r.as_dict() for r in rows])[1:-1]


def json_tail(report: AuditReport) -> str:
    return '],"pending":' + _compact([p.as_dict() for p in report.pending]) + "}"


def render_json(report: AuditReport) -> str:
    return json_head(report) + ",".join(json_rows(c) for c in chunked(report.rows) if c) + json_tail(report)


def _cells(row: ReportRow) -> list[str]:
    return [str(get(row)) for _, get in COLUMNS]


def render_table(report: AuditReport, max_width: int = 48) -> str:
    """A fixed-width table for terminals, then the summary."""
    rows = [[_plain(c) if len(c) <= max_width else _plain(c)[: max_width - 1] + "…" for c in _cells(r)] for r in report.rows]
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
    extra = f"; {_plain(report.note)}" if report.note else ""
    return (f"{report.summary.total} pool row(s), mode {report.effective_mode}: {counts}; "
            f"remediations started {report.summary.remediations_started}, failures {report.summary.failures}{extra}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def _plain(text: Any) -> str:
    """Text for a terminal: control characters (CR, escape sequences, line breaks) become spaces."""
    return _CONTROL.sub(" ", str(text))


_MD_NEEDS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\`*_{}\[\]()#+!|~&<>]|://|www\.")


def md_text(text: Any) -> str:
    """Untrusted text (names, tags, ARM's messages) as inert Markdown inside a table cell or a line.

    Control characters (CR, LF, tab, NEL, line separators) become spaces so a value stays in its cell; `& < >` become
    entities so no HTML gets through; Markdown's punctuation is backslash-escaped (no emphasis, code, link, image or cell
    break); bare URLs are broken up so renderers do not turn them into links.
    """
    text = str(text)
    return _md_escape(text) if _MD_NEEDS.search(text) else text


@functools.lru_cache(maxsize=16384)  # the same reasons, names and states recur across rows
def _md_escape(text: str) -> str:
    out = _MD_PUNCT.sub(r"\\\1", _CONTROL.sub(" ", text))
    out = out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return out.replace("://", ":\\/\\/").replace("www.", "www\\.")



def markdown_head(report: AuditReport, names: dict[str, str]) -> str:
    """Title, notes, the summary and per-subscription tables, and the node pool table's header."""
    s = report.summary
    out = [
        f"# Artifact streaming audit {md_text(report.started_at)}",
        "",
        f"Run `{md_text(report.run_id)}`, mode **{report.effective_mode}**"
        + (f" (configured {report.mode})" if report.mode != report.effective_mode else "")
        + f", finished {md_text(report.finished_at)}.",
    ]
    if report.note:
        out += ["", f"> {md_text(report.note)}"]
    if s.stopped_early:
        out += ["", f"> **Stopped early:** {md_text(s.stopped_early)}"]
    out += ["", "## Summary", "", "| state | pools |", "|---|---:|"]
    out += [f"| {state} | {s.by_state.get(state, 0)} |" for state in STATES]
    out += [f"| **total** | **{s.total}** |", "", "Remediations started: "
            f"{s.remediations_started}; failures: {s.failures}.", "", "### Per subscription", ""]
    out += ["| subscription | " + " | ".join(STATES) + " |", "|---|" + "---:|" * len(STATES)]
    for sub, counts in sorted(s.by_subscription.items()):
        label = " ".join(x for x in (md_text(names.get(sub) or ""), md_text(sub)) if x)
        out.append(f"| {label} | " + " | ".join(str(counts.get(st, 0)) for st in STATES) + " |")
    out += ["", "## Node pools", "", "| " + " | ".join(n for n, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(out) + "\n"


def markdown_rows(rows: list[ReportRow]) -> str:
    return "".join("| " + " | ".join(md_text(c) for c in _cells(r)) + " |\n" for r in rows)


def markdown_tail(report: AuditReport) -> str:
    if not report.pending:
        return ""
    out = ["", "## Remediations to verify next run", ""]
    out += [f"- {md_text(p.resource_id)} (started {md_text(p.started_at)})" for p in report.pending]
    return "\n".join(out) + "\n"


def render_markdown(report: AuditReport) -> str:
    names = {r.subscription_id: r.subscription_name for r in report.rows}
    return markdown_head(report, names) + "".join(markdown_rows(c) for c in chunked(report.rows)) + markdown_tail(report)


class BlockWriter:
    """A block blob written in order as text arrives: staged in blocks of BLOCK_BYTES, the head staged last and committed first."""

    def __init__(self, blob: Any) -> None:
        self.blob = blob
        self.ids: list[str] = []
        self._buffer: list[bytes] = []
        self._size = 0

    def _stage(self, data: bytes) -> str:
        block_id = base64.b64encode(f"{len(self.ids) + 1:08d}".encode()).decode()
        self.blob.stage_block(block_id, data, length=len(data))
        self.ids.append(block_id)
        return block_id

    def write(self, text: str) -> None:
        data = text.encode()
        self._buffer.append(data)
        self._size += len(data)
        if self._size >= BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._size:
            self._stage(b"".join(self._buffer))
        self._buffer, self._size = [], 0

    def commit(self, head: str, tail: str, content_type: str) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        self.write(tail)
        self.flush()
        body = self.ids[:]
        head_id = self._stage(head.encode())
        self.blob.commit_block_list([BlobBlock(block_id=i) for i in [head_id, *body]],
                                    content_settings=ContentSettings(content_type=content_type))


RENDERERS = {"json": render_json, "markdown": render_markdown, "table": render_table}


@dataclass
class ReportStore:
    """Blob Storage for reports and the pending-remediation state, in one container of the app's storage account."""

    service: Any  # azure.storage.blob.BlobServiceClient
    container: str
    shard_suffix: str = ""  # "-shard-1-of-4" when the estate is sharded: each shard keeps its own latest and state
    _created: bool = False

    def blobs(self) -> Any:
        """The container client (created on first use)."""
        return self._container()

    def _container(self) -> Any:
        from azure.core.exceptions import ResourceExistsError

        client = self.service.get_container_client(self.container)
        if not self._created:
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            self._created = True
        return client

    def write_report(self, report: AuditReport, chunks: Iterable[list[ReportRow]] | None = None) -> dict[str, str]:
        """Stream JSON and Markdown to `reports/YYYY/MM/DD/` in blocks, then copy them to `latest` server-side.

        The rows go out in plan order, chunk by chunk: `report.rows`, or `chunks` when the rows come from elsewhere (a
        fanned-out run's record), in which case they are tallied into `report.summary` as they pass. The heads, which hold
        the summary, are staged last and committed first. Returns the blob names.
        """
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
        as_json, as_md = BlockWriter(container.get_blob_client(names["json"])), BlockWriter(container.get_blob_client(names["markdown"]))
        tally = Tally() if chunks is not None else None
        first = True
        for chunk in chunks if chunks is not None else chunked(report.rows):
            if not chunk:
                continue
            if tally is not None:
                for row in chunk:
                    tally.add(row)
            as_json.write(("" if first else ",") + json_rows(chunk))
            as_md.write(markdown_rows(chunk))
            first = False
        if tally is not None:
            report.summary = tally.summary(report.summary.failures, report.summary.stopped_early)
        names_by_sub = tally.names if tally is not None else {r.subscription_id: r.subscription_name for r in report.rows}
        as_json.commit(json_head(report), json_tail(report), "application/json")
        as_md.commit(markdown_head(report, names_by_sub), markdown_tail(report), "text/markdown; charset=utf-8")
        for kind in ("json", "markdown"):
            self._copy(container, names[kind], names[f"latest_{kind}"])
        return names

    def _copy(self, container: Any, source: str, target: str, limit_s: float = 60.0) -> None:
        """Server-side copy within the account (no bytes through this process); same-account copies finish at once."""
        props = container.get_blob_client(target).start_copy_from_url(container.get_blob_client(source).url)
        deadline = time.monotonic() + limit_s
        status = props.get("copy_status")
        while status == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = container.get_blob_client(target).get_blob_properties().copy.status
        if status != "success":
            raise RuntimeError(f"copying {source} to {target} ended {status}")

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
