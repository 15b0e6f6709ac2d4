"""The emulated ACR data plane, one aiohttp app per registry: token service, OCI distribution, referrers, /acr/v1, streaming.

Wire behaviour follows the recorded az CLI session (tests/fixtures/acr_recording/) where it speaks, docker distribution /
OCI distribution 1.1 elsewhere; choices where Azure is not on record are in docs/emulator-acr.md. One module per family:
auth (tokens, grants), oci (catalog, manifests, blobs, uploads, referrers), tags, manifests (attributes), streaming,
admin (control routes); service.py holds a registry's state and shared lookups, routes.py the route table.
"""

from .common import classify
from .routes import HANDLERS, SERVICE_KEY, create_registry_app, dispatch
from .service import RegistryService

__all__ = ["HANDLERS", "SERVICE_KEY", "RegistryService", "classify", "create_registry_app", "dispatch"]
