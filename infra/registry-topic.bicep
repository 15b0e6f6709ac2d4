// For one registry (deployed into the registry's resource group): its Event Grid system topic with a system-assigned
// identity (it writes dead letters), the app's data-plane role and ARM read on the registry, the topic's metrics to the
// app's Log Analytics workspace, and the dead-letter alert.
param registryName string
param appPrincipalId string

@description('AcrPush (legacy RBAC mode, the default) or the tenant\'s "Container Registry Repository Writer" GUID for an ABAC-mode registry.')
param dataPlaneRoleId string

@description('ABAC-mode registries only: the "Container Registry Repository Catalog Lister" GUID (the sweep lists the catalog; ABAC registries grant /v2/_catalog with no other role). Empty: not assigned (AcrPush covers it in legacy RBAC mode).')
param catalogListerRoleId string = ''
param workspaceId string
param actionGroupId string

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: '${registryName}-events'
  location: registry.location
  identity: { type: 'SystemAssigned' }
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

// Streaming conversions are a push-scoped data-plane operation (plus referrers and manifests to read).
resource dataPlaneRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, dataPlaneRoleId)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataPlaneRoleId)
  }
}

// The sweep's catalog listing on an ABAC registry (the role takes no ABAC condition: it lists every repository's name).
resource catalogListerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(catalogListerRoleId)) {
  name: guid(registry.id, appPrincipalId, catalogListerRoleId)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', catalogListerRoleId)
  }
}

// ARM read of the registry (SKU, encryption, login server) for the eligibility check: the data-plane roles do not grant it.
resource readerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, reader)
  scope: registry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
  }
}

// Delivery and dead-letter counts (and delivery failure logs) where the operator queries everything else.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-autopilot-workspace'
  scope: systemTopic
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated' // resource-specific tables (AegDeliveryFailureLogs) rather than AzureDiagnostics
    metrics: [{ category: 'AllMetrics', enabled: true }]
    logs: [{ category: 'DeliveryFailures', enabled: true }]
  }
}

resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-asa-deadletters-${registryName}'
  location: 'global'
  properties: {
    description: 'Event Grid dead-lettered a push event of ${registryName} (every retry failed for 24 h); the sweep catches up, see docs/operate.md.'
    severity: 2
    enabled: true
    scopes: [systemTopic.id]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [{ name: 'deadLetters', criterionType: 'StaticThresholdCriterion', metricName: 'DeadLetteredCount', operator: 'GreaterThan', threshold: 0, timeAggregation: 'Total' }]
    }
    actions: [{ actionGroupId: actionGroupId }]
  }
}

output systemTopicName string = systemTopic.name
output principalId string = systemTopic.identity.principalId
