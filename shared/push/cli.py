"""`python -m shared stream …`: the operator's way to make one image streamable (or list its streaming artifacts) via PushService."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

from ..acr import AcrError
from ..settings import AzureSettings, SettingsError
from .events import DIGEST_RE, REPOSITORY_RE, TAG_RE, RegistryRef
from .outcomes import EXIT_CODES, TransientError

EXIT_USAGE = 2
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: try again later


class UsageError(ValueError):
    pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def parse_image(text: str) -> tuple[str, str | None, str | None]:
    """`repo:tag` or `repo@sha256:…` → (repository, tag, digest)."""
    if "@" in text:
        repo, _, digest = text.partition("@")
        if not REPOSITORY_RE.match(repo) or not DIGEST_RE.match(digest):
            raise UsageError(f"--image {text!r}: expected repo@sha256:<64 hex>")
        return repo, None, digest
    repo, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        raise UsageError(f"--image {text!r}: give repo:tag or repo@sha256:… (e.g. web/frontend:1.0.0)")
    if not REPOSITORY_RE.match(repo) or not TAG_RE.match(tag):
        raise UsageError(f"--image {text!r}: {repo!r} is not a repository name or {tag!r} not a tag")
    return repo, tag, None


def resolve_registry(text: str, azure: AzureSettings) -> tuple[RegistryRef, str | None]:
    """A registry resource ID, name or login server → (RegistryRef, login server if known). Names are looked up in ARM."""
    if text.startswith("/"):
        ref = RegistryRef.parse(text)
        if ref is None:
            raise UsageError(f"--registry {text!r} is not a registry resource ID")
        return ref, None
    from ..azure_clients import container_registry_client, subscription_client

    wanted = text.lower()
    for sub in subscription_client(azure).subscriptions.list():
        sub_id: str = getattr(sub, "subscription_id", None) or ""  # the SDK types this read-only field as None
        if not sub_id:
            continue
        try:
            registries = list(container_registry_client(azure, sub_id).registries.list())
        except HttpResponseError as exc:  # a subscription we may not read (403) or that is gone (404) is not where it is
            if exc.status_code in (403, 404):
                continue
            raise
        for reg in registries:
            login = (reg.login_server or "").lower()
            if (reg.name or "").lower() == wanted or login == wanted:
                ref = RegistryRef.parse(reg.id or "")
                if ref is not None:
                    return ref, login or None
    raise UsageError(f"--registry {text!r}: no registry with that name or login server in the subscriptions this identity can read")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stream",
        help="create the streaming artifact of one image now (same checks as the Event Grid function)",
        description="Make one image streamable: registry and image checks, then create the conversion exactly once. "
                    "Exit codes: 0 created or in progress, 10 already streaming, 20 skipped, 30 failed, 75 transient error "
                    "(retry), 2 usage or settings error.",
    )
    parser.add_argument("--registry", required=True, help="registry name, login server (NAME.azurecr.io) or resource ID")
    parser.add_argument("--image", required=True, help="repo:tag or repo@sha256:…")
    parser.add_argument("--wait", nargs="?", type=float, const=300.0, default=None, metavar="SECONDS",
                        help="wait for the conversion to finish (default 300 s when given without a value)")
    parser.add_argument("--report", action="store_true", help="only say what would be done; create nothing")
    parser.add_argument("--list-referrers", action="store_true", help="list the image's streaming artifacts and exit")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from .service import ImageTarget, PushService

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        service = PushService.from_env()
        repository, tag, digest = parse_image(args.image)
        registry, login_server = resolve_registry(args.registry, service.settings.azure)
    except (SettingsError, UsageError) as exc:
        stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except ClientAuthenticationError as exc:
        stderr.write(f"error: cannot get a token for Azure ({_first_line(exc)}); sign in (az login) or run with a managed "
                     "identity\n")
        return EXIT_USAGE
    except AzureError as exc:
        stderr.write(f"error: cannot reach Azure to find the registry: {_first_line(exc)}\n")
        return EXIT_TRANSIENT
    target = ImageTarget(registry, repository, digest, tag, login_server)
    try:
        if args.list_referrers:
            referrers = service.list_referrers(target)
            if args.json:
                stdout.write(json.dumps(referrers, indent=2) + "\n")
            else:
                for r in referrers:
                    stdout.write(f"{r.get('digest')}  {r.get('artifactType')}  {r.get('size', '')}\n")
                stdout.write(f"{len(referrers)} streaming artifact(s) for {args.image}\n")
            return 0
        outcome = service.stream(target, wait_seconds=args.wait, report=args.report or None)
    except TransientError as exc:
        stderr.write(f"transient error ({exc.code}): {exc}; try again\n")
        return EXIT_TRANSIENT
    except AcrError as exc:
        stderr.write(f"error: {exc}\n")
        return EXIT_TRANSIENT if exc.transient else EXIT_CODES["failed"]
    except ClientAuthenticationError as exc:
        stderr.write(f"error: cannot get a token for Azure ({_first_line(exc)}); sign in (az login) or run with a managed "
                     "identity\n")
        return EXIT_USAGE
    if args.json:
        stdout.write(json.dumps(outcome.as_dict(), indent=2) + "\n")
    else:
        extra = outcome.reason or outcome.code or ""
        stdout.write(f"{outcome.outcome}{f' ({extra})' if extra else ''}: {outcome.subject}"
                     f"{f' operation {outcome.operation_id}' if outcome.operation_id else ''}\n")
        if outcome.detail:
            stdout.write(f"  {outcome.detail}\n")
    return EXIT_CODES[outcome.outcome]
