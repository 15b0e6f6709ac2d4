"""(being built) Push path trigger adapter: Event Grid ImagePushed → shared.push service."""

import azure.functions as func

bp = func.Blueprint()
