// Deploys Artifact Streaming Autopilot (Flex Consumption function app, Python 3.11) into a new resource group, and wires
// each registry's pushes to it. Every parameter is explained in docs/deploy.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; used to name the resource group and resources.')
param environmentName string

@minLength(1)
@description('Azure region for the app.')
param location string

@description('Resource IDs of the Premium container registries whose pushes get streaming artifacts (same tenant).')
param registryResourceIds array = []

@description('Registries in ABAC mode (roleAssignmentMode AbacRepositoryPermissions): their resource IDs, lower case; they get Container Registry Repository Writer instead of AcrPush.')
param abacRegistryResourceIds array = []

@description('Role definition GUID of "Container Registry Repository Writer" in your tenant (az role definition list --name "Container Registry Repository Writer" --query [0].name); needed only with abacRegistryResourceIds.')
param repositoryWriterRoleId string = ''

@description('Role definition GUID of the built-in "Container Registry Repository Catalog Lister" (built-in GUIDs are the same in every tenant; check with az role definition list --name "Container Registry Repository Catalog Lister" --query [0].name). Assigned on ABAC registries only: the sweep lists their catalog with it.')
param repositoryCatalogListerRoleId string = 'bfdb9389-c9a5-478a-bb2f-ba9ca092c3c7'

@description('Create the Event Grid subscriptions to the push function. azd sets it (AUTOPILOT_EVENTS_READY) after the first code deployment: an AzureFunction destination needs the function to exist.')
param subscribeToRegistries bool = false

@description('Subscriptions the audit covers; empty = every subscription the identity can read. Grant access with infra/audit-roles.bicep.')
param auditSubscriptionIds array = []

@allowed(['report', 'enforce'])
param auditMode string = 'report'

@allowed(['report', 'enforce'])
param pushMode string = 'enforce'

@description('NCRONTAB (6 fields, UTC) of the audit timer; default hourly.')
param auditSchedule string = '0 0 * * * *'

@description('NCRONTAB (6 fields, UTC) of the reconcile sweep; default daily at 02:30.')
param sweepSchedule string = '0 30 2 * * *'

@description('Any other app setting, by name (e.g. {"AUTOPILOT_AUDIT_WINDOW": "Mon-Fri 09-17"}); applied over the defaults.')
param appSettingsOverrides object = {}

@description('E-mail address for the alerts (dead letters, failed invocations, audit errors); empty = alerts without a receiver.')
param alertEmail string = ''

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
    auditSchedule: auditSchedule
    sweepSchedule: sweepSchedule
    appSettingsOverrides: appSettingsOverrides
    alertEmail: alertEmail
  }
}

// Per registry: its Event Grid system topic (with the identity that writes dead letters), the app's roles on it, and the
// dead-letter alert. Registries may live in any resource group or subscription of the tenant.
module registryTopics 'registry-topic.bicep' = [for (registryId, i) in registryResourceIds: {
  name: 'registry-topic-${i}'
  scope: resourceGroup(split(registryId, '/')[2], split(registryId, '/')[4])
  params: {
    registryName: last(split(registryId, '/'))
    appPrincipalId: app.outputs.principalId
    dataPlaneRoleId: contains(abacRegistryResourceIds, toLower(registryId)) ? repositoryWriterRoleId : '8311e382-0749-4cb8-b61a-304f252e45ec'
    catalogListerRoleId: contains(abacRegistryResourceIds, toLower(registryId)) ? repositoryCatalogListerRoleId : ''
    workspaceId: app.outputs.workspaceId
    actionGroupId: app.outputs.actionGroupId
  }
}]

// The system topics' identities may write (only) into the dead-letter container of the app's storage account.
module deadLetterAccess 'deadletter-access.bicep' = [for (registryId, i) in registryResourceIds: {
  name: 'deadletter-access-${i}'
  scope: rg
  params: {
    storageAccountName: app.outputs.storageAccountName
    containerName: app.outputs.deadLetterContainer
    topicPrincipalId: registryTopics[i].outputs.principalId
    registryId: registryId
  }
}]

// The subscriptions themselves, once the function exists (second pass of `azd up`, see docs/deploy.md).
module registrySubscriptions 'registry-subscription.bicep' = [for (registryId, i) in registryResourceIds: if (subscribeToRegistries) {
  name: 'registry-subscription-${i}'
  scope: resourceGroup(split(registryId, '/')[2], split(registryId, '/')[4])
  dependsOn: [deadLetterAccess]
  params: {
    systemTopicName: registryTopics[i].outputs.systemTopicName
    functionResourceId: app.outputs.pushFunctionResourceId
    deadLetterStorageId: app.outputs.storageAccountId
    deadLetterContainer: app.outputs.deadLetterContainer
  }
}]

output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_PRINCIPAL_ID string = app.outputs.principalId
output AZURE_RESOURCE_GROUP string = rg.name
output OUTCOME_TOPIC_ENDPOINT string = app.outputs.topicEndpoint
output REGISTRY_COUNT int = length(registryResourceIds)
output EVENT_SUBSCRIPTIONS_CREATED bool = subscribeToRegistries
