"""The Functions entry point: creates the FunctionApp and registers the blueprints; nothing heavy is imported here."""

import azure.functions as func

from functions.audit import bp as audit_bp
from functions.push import bp as push_bp

app = func.FunctionApp()
app.register_functions(push_bp)
app.register_functions(audit_bp)
