// Deploys the Artifact Streaming Autopilot function app (Flex Consumption, Python 3.11) into a new resource group.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; used to name resources.')
param environmentName string

@minLength(1)
@description('Azure region for the app.')
param location string

@description('Resource IDs of the Premium container registries whose pushes should get streaming artifacts (same tenant).')
param registryResourceIds array = []

@description('Subscriptions the audit covers; empty = every subscription the identity can read (grant roles with roles.bicep).')
param auditSubscriptionIds array = []

@allowed(['report', 'enforce'])
param auditMode string = 'report'

@allowed(['report', 'enforce'])
param pushMode string = 'enforce'

var tags = { 'azd-env-name': environmentName }
var token = toLower(uniqueString(subscription().id, environmentName, location))

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module app 'app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    location: location
    tags: tags
    token: token
    registryResourceIds: registryResourceIds
    auditSubscriptionIds: auditSubscriptionIds
    auditMode: auditMode
    pushMode: pushMode
  }
}

output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_PRINCIPAL_ID string = app.outputs.principalId
output OUTCOME_TOPIC_ENDPOINT string = app.outputs.topicEndpoint
