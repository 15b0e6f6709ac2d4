"""Fault and latency injection: seeded, per endpoint class, and replayable regardless of request interleaving."""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultRule:
    """What to do to requests of the endpoint classes matching `match` (a glob such as `arm`, `acr.*`)."""

    match: str = "*"
    latency_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered with one of `statuses`
    statuses: tuple[int, ...] = (429, 500, 503)
    retry_after: float = 1.0  # seconds, sent with 429 and 503
    drop_rate: float = 0.0  # share of requests whose connection is dropped without an answer
    methods: tuple[str, ...] = ()  # empty: every method
    after_handler: bool = False  # True: the request IS processed, then its answer is replaced or lost (a lost response)
    error_code: str = ""  # the error body's code (default: one per status, in the service's style: ARM's or ACR's)
    error_message: str = ""  # the error body's message (default: names the fault and the endpoint class)
    headers: dict[str, str] = field(default_factory=dict)  # sent with an injected error (e.g. a WWW-Authenticate elsewhere)
    # Applied to every matching answer (no draw): the service's own slowness and oddities.
    latency_after_ms: float = 0.0  # the request is processed, then its answer takes this long (a slow answer)
    strip_fields: tuple[str, ...] = ()  # dotted paths removed from a JSON answer (e.g. properties.loginServer)
    set_headers: dict[str, str] = field(default_factory=dict)  # headers added to the answer (e.g. a Link to another host)
    body_bytes: int = 0  # > 0: a 200 answer's body is replaced by this many bytes, chunked, no Content-Length (a huge blob)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultRule:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown fault rule keys {sorted(unknown)}; known: {sorted(known)}")
        data = dict(raw)
        for key in ("statuses", "methods", "strip_fields"):
            if key in data:
                data[key] = tuple(data[key])
        rule = cls(**data)
        if not rule.statuses or any(isinstance(st, bool) or not isinstance(st, int) or not 400 <= st <= 599 for st in rule.statuses):
            raise ValueError(f"fault rule statuses must be HTTP error statuses (400-599), got {list(rule.statuses)}")
        for key in ("error_rate", "drop_rate"):
            if not 0.0 <= getattr(rule, key) <= 1.0:
                raise ValueError(f"fault rule {key} must be between 0 and 1")
        return rule


@dataclass
class FaultDecision:
    latency_s: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    after_handler: bool = False  # apply status/drop to the answer of a request that was processed
    error_code: str = ""
    error_message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    latency_after_s: float = 0.0
    strip_fields: tuple[str, ...] = ()
    set_headers: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0

    @property
    def rewrites(self) -> bool:
        return bool(self.latency_after_s or self.strip_fields or self.set_headers or self.body_bytes)


@dataclass
class FaultPlan:
    """The active rules plus a seed. Each request's fate is a hash of (seed, class, method, path, n-th time seen)."""

    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    _seen: Counter = field(default_factory=Counter, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def configure(self, rules: list[dict[str, Any]] | list[FaultRule], seed: int | None = None) -> None:
        parsed = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        with self._lock:
            self.rules = parsed
            if seed is not None:
                self.seed = seed
            self._seen.clear()

    def _draw(self, key: str, salt: str) -> float:
        digest = hashlib.sha256(f"{self.seed}|{key}|{salt}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def decide(self, endpoint_class: str, method: str, path: str) -> FaultDecision:
        decision = FaultDecision()
        with self._lock:
            rules = [
                r for r in self.rules
                if fnmatch.fnmatchcase(endpoint_class, r.match) and (not r.methods or method in r.methods)
            ]
            if not rules:
                return decision
            base = f"{endpoint_class}|{method}|{path}"
            self._seen[base] += 1
            key = f"{base}|{self._seen[base]}"
        for rule in rules:
            decision.latency_s += rule.latency_ms / 1000.0
            decision.latency_after_s += rule.latency_after_ms / 1000.0
            decision.strip_fields += rule.strip_fields
            decision.set_headers.update(rule.set_headers)
            decision.body_bytes = max(decision.body_bytes, rule.body_bytes)
            if decision.status is None and not decision.drop:
                if rule.drop_rate and self._draw(key, f"drop:{rule.match}") < rule.drop_rate:
                    decision.drop = True
                    decision.after_handler = rule.after_handler
                elif rule.error_rate and self._draw(key, f"err:{rule.match}") < rule.error_rate:
                    pick = self._draw(key, f"status:{rule.match}")
                    decision.status = rule.statuses[int(pick * len(rule.statuses)) % len(rule.statuses)]
                    decision.retry_after = rule.retry_after if decision.status in (429, 503) else None
                    decision.after_handler = rule.after_handler
                    decision.error_code, decision.error_message = rule.error_code, rule.error_message
                    decision.headers = dict(rule.headers)
        return decision


def strip_json(body: Any, paths: tuple[str, ...]) -> Any:
    """`body` without the dotted `paths` (missing ones are ignored)."""
    for path in paths:
        *parents, leaf = path.split(".")
        node = body
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return body


class BlackHole:
    """A TCP endpoint that accepts connections (the kernel's backlog) and never answers: a black-holed service.

    `with BlackHole() as hole: hole.url` → https://127.0.0.1:PORT. Loopback only.
    """

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
