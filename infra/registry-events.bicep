// For one registry: its Event Grid system topic, a subscription delivering ImagePushed to the function, and the app's
// data-plane role (streaming conversions are a push-scoped operation) plus Reader for the registry's ARM properties.
param registryName string
param functionResourceId string
param principalId string

@description('Data-plane role for the app on this registry. AcrPush for registries in legacy RBAC mode (the default); for a registry in ABAC mode (roleAssignmentMode AbacRepositoryPermissions) pass the role definition GUID of "Container Registry Repository Writer" from your tenant (az role definition list --name "Container Registry Repository Writer"), since ABAC registries do not honour AcrPush.')
param dataPlaneRoleId string = '8311e382-0749-4cb8-b61a-304f252e45ec'

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource registry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: registryName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: '${registryName}-events'
  location: registry.location
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

resource toFunction 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'artifact-streaming-autopilot'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: { resourceId: functionResourceId, maxEventsPerBatch: 1 }
    }
    filter: { includedEventTypes: ['Microsoft.ContainerRegistry.ImagePushed'] }
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}

resource pushRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, dataPlaneRoleId)
  scope: registry
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataPlaneRoleId)
  }
}

// ARM read of the registry (SKU, encryption, login server); AcrPush includes it, the ABAC repository roles do not.
resource readerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, reader)
  scope: registry
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
  }
}
