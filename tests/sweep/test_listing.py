"""shared/acr/listing.py against the emulator's data plane: paging by Link, tags newest first with digests, manifest
attributes, the auto-conversion switch, and errors as AcrError."""

from __future__ import annotations

import pytest

from shared.acr import AcrError, listing
from shared.push.service import PushService

from .conftest import NOREAD


@pytest.fixture
def acr(sweep_stack):
    stack = sweep_stack(host=False)
    service = PushService.from_env()
    return stack, service.acr(stack.registry().login_server), service


def test_catalog_pages_follow_the_link_header(acr):
    _stack, client, _ = acr
    pages = list(listing.catalog(client, n=2))
    assert [p.items for p in pages] == [["app", "debug"], ["tools"]]
    assert pages[0].last == "debug" and pages[-1].last is None


def test_tags_newest_first_with_digests_and_a_resumable_cursor(acr):
    stack, client, _ = acr
    digests = stack.digests("app")
    pages = list(listing.tags(client, "app", n=4))
    names = [t.name for p in pages for t in p.items]
    assert sorted(names) == sorted(digests) and len(pages) == 2
    assert all(t.digest == digests[t.name] and t.last_update for p in pages for t in p.items)
    resumed = [t.name for p in listing.tags(client, "app", n=4, last=names[2]) for t in p.items]
    assert resumed == names[3:]


def test_manifest_attributes_in_one_request(acr):
    stack, client, _ = acr
    digest = stack.digests("app")["1.0"]
    attrs = listing.manifest_attributes(client, "app", digest)
    assert (attrs.digest, attrs.os, attrs.architecture) == (digest, "linux", "amd64")
    assert attrs.size and attrs.size > 5 * 1024 * 1024 and "1.0" in attrs.tags
    page = listing.manifests_page(client, "app", n=100)
    assert digest in {m.digest for m in page.items}


def test_auto_conversion_switch(acr):
    stack, client, _ = acr
    assert client.auto_conversion("tools") is False
    assert listing.set_auto_conversion(client, "tools", True) is True
    assert stack.registry().repositories["tools"].convert_pushed_images


def test_errors_are_acr_errors(acr):
    stack, client, service = acr
    with pytest.raises(AcrError) as info:
        list(listing.tags(client, "nosuchrepo"))
    assert info.value.status == 404 and not info.value.transient
    noread = service.acr(stack.registry(NOREAD).login_server)
    with pytest.raises(AcrError) as info:
        listing.catalog_page(noread)
    assert info.value.status in (401, 403) and not info.value.transient
