"""The emulated Azure Resource Manager: subscriptions, ACR registries, AKS clusters and agent pools, as Azure answers them.

One module per resource family (subscriptions, registries, clusters, agentpools, operations, resources, metadata), the
control API in admin.py, shared plumbing in common.py, and the route table in routes.py. See docs/emulator-arm.md.
"""

from .admin import pools_touched, record_admin_write
from .common import ArmFailure, ArmRequest, ArmState, arm_state
from .metadata import cloud_metadata, unknown_route
from .operations import finish_operation, settle, start_operation
from .routes import ROUTES, classify, dispatch, setup

__all__ = ["ROUTES", "ArmFailure", "ArmRequest", "ArmState", "arm_state", "classify", "cloud_metadata", "dispatch",
           "finish_operation", "pools_touched", "record_admin_write", "settle", "setup", "start_operation", "unknown_route"]
