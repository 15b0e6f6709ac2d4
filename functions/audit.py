"""(being built) Audit path trigger adapter: timer → shared.audit service."""

import azure.functions as func

bp = func.Blueprint()
