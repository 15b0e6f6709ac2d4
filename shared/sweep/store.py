"""The sweep's Blob Storage: run progress (ETag-guarded counters), per-item results, per-registry resume state, reports."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from .model import Tally

log = logging.getLogger("autopilot.sweep.store")
MAX_UPDATE_ATTEMPTS = 50


def _key(registry_id: str) -> str:
    """A blob-safe, case-insensitive key for a registry resource ID."""
    return registry_id.strip("/").lower().replace("/", "_")


class SweepStore:
    """One container of the app's storage account (AUTOPILOT_SWEEP_CONTAINER). Thread-safe; one per instance."""

    def __init__(self, service: Any, container: str) -> None:
        self.service = service
        self.container_name = container
        self._container: Any = None

    @property
    def container(self) -> Any:
        if self._container is None:
            client = self.service.get_container_client(self.container_name)
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            self._container = client
        return self._container

    # ------------------------------------------------------------------ JSON blobs
    def read(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """(body, etag), or (None, None) when the blob does not exist."""
        try:
            downloader = self.container.download_blob(name)
            raw = downloader.readall()
        except ResourceNotFoundError:
            return None, None
        try:
            body = json.loads(raw)
        except ValueError:
            log.warning("sweep state %s/%s is not JSON; starting it afresh", self.container_name, name)
            return {}, downloader.properties.etag
        return (body if isinstance(body, dict) else {}), downloader.properties.etag

    def write(self, name: str, body: dict[str, Any]) -> None:
        self.container.upload_blob(name, json.dumps(body, separators=(",", ":")).encode(), overwrite=True)

    def update(self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read-modify-write under the blob's ETag (retried on a concurrent change); returns what was written."""
        for attempt in range(MAX_UPDATE_ATTEMPTS):
            body, etag = self.read(name)
            new = change(dict(body or {}))
            data = json.dumps(new, separators=(",", ":")).encode()
            try:
                if etag is None:
                    self.container.upload_blob(name, data, overwrite=False)
                else:
                    self.container.upload_blob(name, data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
                return new
            except (ResourceModifiedError, ResourceExistsError):
                time.sleep(min(0.5, 0.01 * (attempt + 1)))
        raise RuntimeError(f"sweep state {self.container_name}/{name} kept changing under {MAX_UPDATE_ATTEMPTS} attempts")

    # ------------------------------------------------------------------ a run's progress and results
    @staticmethod
    def progress_blob(run_id: str) -> str:
        return f"runs/{run_id}/progress.json"

    def plan_items(self, run_id: str, count: int) -> None:
        """Count `count` more work items as planned (before they are enqueued, so the run cannot look finished early)."""
        self.update(self.progress_blob(run_id), lambda b: {**b, "planned": int(b.get("planned", 0)) + count})

    def item_done(self, run_id: str, poisoned: bool = False) -> bool:
        """Count one work item finished; True for the caller that finished the run's last one (it writes the report)."""
        new = self.update(self.progress_blob(run_id), lambda b: {
            **b, "done": int(b.get("done", 0)) + 1, "poisoned": int(b.get("poisoned", 0)) + (1 if poisoned else 0)})
        return int(new.get("done", 0)) >= int(new.get("planned", 0))

    def conversions_started(self, run_id: str) -> int:
        body, _ = self.read(self.progress_blob(run_id))
        return int((body or {}).get("started", 0))

    def add_started(self, run_id: str, count: int = 1) -> int:
        new = self.update(self.progress_blob(run_id), lambda b: {**b, "started": int(b.get("started", 0)) + count})
        return int(new["started"])

    def progress(self, run_id: str) -> dict[str, Any]:
        return self.read(self.progress_blob(run_id))[0] or {}

    def write_run(self, run_id: str, body: dict[str, Any]) -> None:
        self.write(f"runs/{run_id}/run.json", body)

    def run(self, run_id: str) -> dict[str, Any]:
        return self.read(f"runs/{run_id}/run.json")[0] or {}

    def write_result(self, run_id: str, item_id: str, tallies: list[Tally], extra: dict[str, Any] | None = None) -> None:
        self.write(f"runs/{run_id}/items/{item_id}.json", {"tallies": [t.as_dict() for t in tallies], **(extra or {})})

    def results(self, run_id: str) -> list[dict[str, Any]]:
        out = []
        for blob in self.container.list_blobs(name_starts_with=f"runs/{run_id}/items/"):
            body, _ = self.read(blob.name)
            if body:
                out.append(body)
        return out

    def write_error(self, item_id: str, error: str) -> None:
        """The last exception of a work item (read by the poison handler for its report line)."""
        self.write(f"errors/{item_id}.json", {"error": error[:2000], "at": time.time()})

    def error(self, item_id: str) -> str | None:
        body, _ = self.read(f"errors/{item_id}.json")
        return str(body.get("error")) if body else None

    # ------------------------------------------------------------------ per-registry resume state
    def registry_state(self, registry_id: str) -> dict[str, Any]:
        return self.read(f"state/{_key(registry_id)}.json")[0] or {}

    def update_registry_state(self, registry_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        return self.update(f"state/{_key(registry_id)}.json", change)

    # ------------------------------------------------------------------ reports
    def write_report(self, started_at: str, run_id: str, bodies: dict[str, str]) -> dict[str, str]:
        """JSON and Markdown under `reports/YYYY/MM/DD/` and as `latest`; returns the blob names."""
        from azure.storage.blob import ContentSettings

        day = started_at[:10].replace("-", "/")
        stamp = started_at[11:19].replace(":", "")
        names = {"json": f"reports/{day}/{stamp}-{run_id}.json", "markdown": f"reports/{day}/{stamp}-{run_id}.md",
                 "latest_json": "latest.json", "latest_markdown": "latest.md"}
        types = {"json": "application/json", "markdown": "text/markdown; charset=utf-8"}
        for key, name in names.items():
            kind = "json" if key.endswith("json") else "markdown"
            self.container.upload_blob(name, bodies[kind].encode(), overwrite=True,
                                       content_settings=ContentSettings(content_type=types[kind]))
        return names
