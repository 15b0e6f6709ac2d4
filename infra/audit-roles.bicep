// Deploy once per audited subscription (targetScope subscription): Reader for report mode, plus
// "Azure Kubernetes Service Contributor Role" when enforce mode may enable streaming on node pools.
targetScope = 'subscription'

param principalId string
param allowEnforce bool = false

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var aksContributor = 'ed7f3fbd-7b88-4dd4-9017-9adb7ce333f8'

resource readerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, reader)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
  }
}

resource aksRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (allowEnforce) {
  name: guid(subscription().id, principalId, aksContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', aksContributor)
  }
}
