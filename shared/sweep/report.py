"""The sweep report: JSON for machines, Markdown for people, a text table for terminals (per registry, then failures)."""

from __future__ import annotations

import json

from .model import SweepReport, Tally


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"


COLUMNS = (
    ("registry", lambda t: t.registry),
    ("status", lambda t: t.status),
    ("tags", lambda t: str(t.tags_seen)),
    ("digests", lambda t: str(t.digests_seen)),
    ("streaming", lambda t: str(t.already_streaming)),
    ("started", lambda t: str(t.started)),
    ("would start", lambda t: str(t.would_start)),
    ("in progress", lambda t: str(t.in_progress)),
    ("skipped", lambda t: _counts(t.skipped)),
    ("failed", lambda t: _counts(t.failed)),
    ("retry next run", lambda t: _counts(t.retry_next_run)),
    ("dead letters", lambda t: str(t.dead_letters_handled)),
    ("auto-conversion", lambda t: ", ".join(t.auto_conversion_changed) or "-"),
    ("repos left", lambda t: str(t.repositories_left)),
)


def _cells(t: Tally) -> list[str]:
    return [get(t) for _, get in COLUMNS]


def summary_line(report: SweepReport) -> str:
    d = report.as_dict()["totals"]
    verb = "would start" if report.mode == "report" else "started"
    started = d["would_start"] if report.mode == "report" else d["started"]
    left = f"; work left for the next run: {d['repositories_left']} repositories ({report.stopped})" if d["repositories_left"] else ""
    poisoned = f"; {report.poisoned_items} work item(s) poisoned" if report.poisoned_items else ""
    return (f"sweep {report.run_id} ({report.mode}): {len(report.registries)} registr{'y' if len(report.registries) == 1 else 'ies'}, "
            f"{d['tags_seen']} tags, {d['digests_seen']} digests, {d['already_streaming']} already streaming, {verb} {started}, "
            f"in progress {d['in_progress']}, failed {d['failed']}, dead letters handled {d['dead_letters_handled']}{left}{poisoned}")


def render_json(report: SweepReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


def render_table(report: SweepReport, max_width: int = 40) -> str:
    rows = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in _cells(t)] for t in report.registries]
    headers = [name for name, _ in COLUMNS]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    notes = [f"{t.registry}: {t.detail}" for t in report.registries if t.detail]
    failures = [f"{f.registry}  {f.what}  {f.code}  {f.detail}" for t in report.registries for f in t.failures]
    if notes:
        lines += ["", *notes]
    if failures:
        lines += ["", "failures:", *failures]
    return "\n".join([*lines, "", summary_line(report)])


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: SweepReport) -> str:
    out = [f"# Artifact streaming sweep {report.started_at}", "",
           f"Run `{report.run_id}`, mode **{report.mode}**, {report.work_items} work item(s), finished {report.finished_at}.", "",
           f"> {_md(summary_line(report))}", "", "## Registries", "",
           "| " + " | ".join(n for n, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(_md(c) for c in _cells(t)) + " |" for t in report.registries]
    notes = [t for t in report.registries if t.detail]
    if notes:
        out += ["", "## Registries not walked or not fully read", ""]
        out += [f"- **{_md(t.registry)}** ({t.status}): {_md(t.detail)}" for t in notes]
    failures = [f for t in report.registries for f in t.failures]
    if failures:
        out += ["", "## Failures", "", "| registry | what | code | detail |", "|---|---|---|---|"]
        out += [f"| {_md(f.registry)} | `{_md(f.what)}` | {_md(f.code)} | {_md(f.detail)} |" for f in failures]
    return "\n".join(out) + "\n"


RENDERERS = {"json": render_json, "markdown": render_markdown, "table": render_table}
