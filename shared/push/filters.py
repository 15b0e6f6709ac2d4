"""Which images the push path acts on: the registry allow-list and `repo:tag` include/exclude globs."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from ..settings import SettingsError
from .events import RegistryRef


@dataclass(frozen=True)
class ImageGlob:
    """`repo:tag` with shell-style wildcards (`*` also crosses `/`); matching is case-sensitive, as registries are."""

    repository: str
    tag: str

    @classmethod
    def parse(cls, text: str, setting: str) -> ImageGlob:
        repo, sep, tag = text.strip().rpartition(":")
        if not sep or not repo or not tag:
            raise SettingsError(setting, f"{text!r} is not a repo:tag glob (examples: prod/*:*, *:*-debug, web/frontend:1.*)")
        if ":" in repo:
            raise SettingsError(setting, f"{text!r} has more than one ':' (repositories and tags cannot contain ':')")
        return cls(repo, tag)

    def matches(self, repository: str, tag: str) -> bool:
        return fnmatch.fnmatchcase(repository, self.repository) and fnmatch.fnmatchcase(tag, self.tag)

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class RegistryAllowList:
    """Registries we act for, by resource ID, login server or name; empty allows every registry whose events reach us."""

    resource_ids: frozenset[str] = frozenset()
    login_servers: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()  # bare registry names (no '.' or ':'), matched against the event's resource ID

    @classmethod
    def parse(cls, items: Iterable[str], setting: str) -> RegistryAllowList:
        ids, servers, names = set(), set(), set()
        for item in items:
            if item.startswith("/"):
                ref = RegistryRef.parse(item)
                if ref is None:
                    raise SettingsError(
                        setting,
                        f"{item!r} is not a registry resource ID "
                        "(/subscriptions/GUID/resourceGroups/RG/providers/Microsoft.ContainerRegistry/registries/NAME)",
                    )
                ids.add(ref.resource_id.lower())
            elif "/" in item or " " in item or not item:
                raise SettingsError(setting, f"{item!r} is neither a registry resource ID, a login server (NAME.azurecr.io) "
                                             "nor a registry name")
            elif "." in item or ":" in item:
                servers.add(item.lower())
            else:
                names.add(item.lower())
        return cls(frozenset(ids), frozenset(servers), frozenset(names))

    @property
    def empty(self) -> bool:
        return not self.resource_ids and not self.login_servers and not self.names

    def may_allow(self, registry: RegistryRef) -> bool:
        """False only when the registry is certainly not allowed (the login servers are matched after ARM names its own)."""
        return bool(self.login_servers) or self.allows(registry, None)

    def allows(self, registry: RegistryRef, login_server: str | None) -> bool:
        if self.empty:
            return True
        if registry.resource_id.lower() in self.resource_ids or registry.name.lower() in self.names:
            return True
        return login_server is not None and login_server.lower() in self.login_servers


@dataclass(frozen=True)
class ImageFilter:
    include: tuple[ImageGlob, ...] = ()
    exclude: tuple[ImageGlob, ...] = ()

    def decide(self, repository: str, tag: str) -> str | None:
        """None when the image passes; otherwise a sentence naming the glob that filtered it out."""
        for glob in self.exclude:
            if glob.matches(repository, tag):
                return f"{repository}:{tag} matches the exclude filter {glob}"
        if self.include and not any(g.matches(repository, tag) for g in self.include):
            return f"{repository}:{tag} matches no include filter ({', '.join(map(str, self.include))})"
        return None

