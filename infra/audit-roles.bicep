// Deploy once per audited subscription (targetScope subscription): a custom role with exactly what the audit does on
// AKS (read clusters and node pools; in enforce mode also write node pools), assigned to the app's identity.
targetScope = 'subscription'

@description('Principal (object) ID of the app identity: the AZURE_PRINCIPAL_ID output of `azd up`.')
param principalId string

@description('true where enforce mode may enable streaming on node pools (adds agentPools/write); report-only deployments keep false.')
param allowEnforce bool = false

var readActions = [
  'Microsoft.ContainerService/managedClusters/read'
  'Microsoft.ContainerService/managedClusters/agentPools/read'
]
var actions = allowEnforce ? concat(readActions, ['Microsoft.ContainerService/managedClusters/agentPools/write']) : readActions
// Custom role names are unique in the tenant, so each subscription's role carries its subscription ID.
var roleName = '${allowEnforce ? 'Artifact Streaming Autopilot (enforce)' : 'Artifact Streaming Autopilot (report)'} - ${subscription().subscriptionId}'
var roleId = guid(subscription().id, roleName)

resource auditRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleId
  properties: {
    roleName: roleName
    description: 'Reads AKS clusters and node pools to audit artifact streaming${allowEnforce ? ', and updates node pools to enable it' : ''}.'
    type: 'CustomRole'
    permissions: [{ actions: actions, notActions: [] }]
    assignableScopes: [subscription().id]
  }
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: auditRole.id
  }
}
