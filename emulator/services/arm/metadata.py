"""ARM's cloud metadata (`GET /metadata/endpoints`) for `az cloud register`, and ARM's JSON 404 for routes nothing serves."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...web import Context, arm_error, json_response
from .common import API_VERSION_RE, _arm_headers


def cloud_metadata(arm_url: str, api_version: str) -> dict[str, Any] | list[dict[str, Any]]:
    """ARM's cloud metadata (`GET {arm}/metadata/endpoints`), as `az cloud register` discovers a sovereign cloud with it.

    api-version 2022-09-01 and later answer the one cloud this ARM belongs to; older versions a list of clouds."""
    base = arm_url.rstrip("/") + "/"
    cloud = {
        "portal": base, "authentication": {
            "loginEndpoint": "https://login.microsoftonline.com/", "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common", "identityProvider": "AAD"},
        "media": base, "graphAudience": "https://graph.windows.net/", "graph": "https://graph.windows.net/",
        "name": "AzureLocalEmulator",
        "suffixes": {"azureDataLakeStoreFileSystem": "azuredatalakestore.net", "acrLoginServer": "azurecr.io",
                     "sqlServerHostname": "database.windows.net", "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
                     "keyVaultDns": "vault.azure.net", "storage": "core.windows.net",
                     "azureFrontDoorEndpointSuffix": "azurefd.net", "storageSyncEndpointSuffix": "afs.azure.net",
                     "mhsmDns": "managedhsm.azure.net", "mysqlServerEndpoint": "mysql.database.azure.com",
                     "postgresqlServerEndpoint": "postgres.database.azure.com", "mariadbServerEndpoint": "mariadb.database.azure.com",
                     "synapseAnalytics": "dev.azuresynapse.net", "attestationEndpoint": "attest.azure.net"},
        "batch": "https://batch.core.windows.net/", "resourceManager": base,
        "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/quickstart-templates/aliases.json",
        "activeDirectoryDataLake": "https://datalake.azure.net/", "sqlManagement": "https://management.core.windows.net:8443/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/", "appInsightsResourceId": "https://api.applicationinsights.io",
        "appInsightsTelemetryChannelResourceId": "https://dc.applicationinsights.azure.com/v2/track",
        "attestationResourceId": "https://attest.azure.net", "synapseAnalyticsResourceId": "https://dev.azuresynapse.net",
        "logAnalyticsResourceId": "https://api.loganalytics.io", "ossrDbmsResourceId": "https://ossrdbms-aad.database.windows.net",
    }
    return cloud if api_version >= "2022-09-01" else [cloud]



async def endpoints(ctx: Context, request: web.Request) -> web.Response:
    """`GET /metadata/endpoints?api-version=…`: no authentication, as on Azure."""
    api_version = request.query.get("api-version")
    if not api_version or not API_VERSION_RE.match(api_version):
        return arm_error(400, "MissingApiVersionParameter" if not api_version else "InvalidApiVersionParameter",
                         "The api-version query parameter (?api-version=) is required: use 2022-09-01.",
                         _arm_headers(request, 400))
    return json_response(200, cloud_metadata(ctx.management_url, api_version), _arm_headers(request, 200))


async def unknown_route(request: web.Request) -> web.Response:
    """ARM's error shape for a path nothing serves (registered last, after every management service)."""
    return arm_error(404, "NotFound", f"No route matches '{request.method} {request.path}' on the local Azure emulator's management "
                                      "endpoint (ARM, identity, Event Grid topics, /_emulator).", _arm_headers(request, 404))

