// The app's resources: identity, storage (blobs and queues), monitoring and alerts, the outcome topic, the Flex Consumption
// plan and function app with every setting the code reads, and the app identity's roles on them.
param location string
param tags object
param token string
param registryResourceIds array
param auditSubscriptionIds array
param auditMode string
param pushMode string
param auditSchedule string
param sweepSchedule string
param appSettingsOverrides object
param alertEmail string

var containers = {
  package: 'app-package' // the deployment package Flex Consumption runs from
  locks: 'autopilot-locks' // per-digest blob leases (push path)
  audit: 'autopilot-audit' // audit reports (JSON + Markdown) and audit state
  deadLetter: 'eventgrid-deadletter' // Event Grid writes undeliverable push events here; the reconcile sweep reads them
  sweep: 'autopilot-sweep' // the reconcile sweep's reports and state (AUTOPILOT_SWEEP_CONTAINER)
}
var queues = ['autopilot-sweep', 'autopilot-sweep-poison', 'autopilot-audit', 'autopilot-audit-poison']
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-asa-${token}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no VNet in this template: Flex Consumption reaches storage over its public endpoint, Entra ID only (shared keys off)
  // checkov:skip=CKV_AZURE_206: LRS on purpose: leases, reports and queue messages are rebuilt by the next audit and sweep (docs/deploy.md, costs)
  // checkov:skip=CKV_AZURE_43: the name is 'stasa' + uniqueString() (18 lowercase letters and digits), which checkov cannot evaluate
  name: 'stasa${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource package 'containers' = { name: containers.package }
    resource locks 'containers' = { name: containers.locks }
    resource audit 'containers' = { name: containers.audit }
    resource deadLetter 'containers' = { name: containers.deadLetter }
    resource sweep 'containers' = { name: containers.sweep }
  }
}

// The fanned-out audit's run records (runs/<run>/: plan, per-message records, counts) are read only while their run is
// open; a run whose finalizer died is never reported, so nothing else would remove its record.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-audit-run-records'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: [ 'blockBlob', 'appendBlob' ], prefixMatch: [ '${containers.audit}/runs/' ] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 7 } } }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The sweep's and the audit fan-out's queues, and the poison queues the Functions host moves failing messages to.
resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for name in queues: {
  parent: queueService
  name: name
}]

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-asa-${token}'
  location: location
  tags: tags
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-asa-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193: no VNet or private endpoint in this template: the app publishes over the public endpoint, Entra ID only (local auth off)
  name: 'evgt-asa-${token}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' } // for subscribers' deliveries and dead letters with a managed identity; it holds no role here
  properties: { inputSchema: 'CloudEventSchemaV1_0', disableLocalAuth: true }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Event Grid retries for 24 h and the audit and sweep re-run, so a zone outage delays work but loses none; zone redundancy is a cost choice
  name: 'plan-asa-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

// Every setting the code reads (tests/infra/test_settings_consistency.py keeps this, local.settings.json.example and the
// code in step); the values are the code's defaults unless a parameter sets them. appSettingsOverrides wins over all.
var autopilotSettings = {
  AUTOPILOT_ARM_ENDPOINT: environment().resourceManager
  AUTOPILOT_ARM_AUDIENCE: environment().resourceManager
  AUTOPILOT_ACR_AUDIENCE: 'https://containerregistry.azure.net'
  AUTOPILOT_TOPIC_ENDPOINT: topic.properties.endpoint
  AUTOPILOT_LOG_HTTP: 'false'
  AUTOPILOT_PUSH_MODE: pushMode
  AUTOPILOT_PUSH_REGISTRIES: join(registryResourceIds, ',')
  AUTOPILOT_PUSH_INCLUDE: ''
  AUTOPILOT_PUSH_EXCLUDE: '*:*-debug'
  AUTOPILOT_PUSH_MAX_IMAGE_GB: '30'
  AUTOPILOT_PUSH_WAIT_SECONDS: '0'
  AUTOPILOT_PUSH_REGISTRY_CACHE_SECONDS: '300'
  AUTOPILOT_PUSH_LOCK_SECONDS: '30'
  AUTOPILOT_PUSH_LOCK_CONTAINER: containers.locks
  AUTOPILOT_PUSH_NOT_FOUND_WINDOW_SECONDS: '300'
  AUTOPILOT_PUSH_TIMEOUT_SECONDS: '30'
  AUTOPILOT_PUSH_HTTP_RETRIES: '4'
  AUTOPILOT_PUSH_DEADLINE_SECONDS: '20'
  AUTOPILOT_AUDIT_MODE: auditMode
  AUTOPILOT_AUDIT_SCHEDULE: auditSchedule
  AUTOPILOT_AUDIT_SUBSCRIPTIONS: join(auditSubscriptionIds, ',')
  AUTOPILOT_AUDIT_MAX_REMEDIATIONS: '10'
  AUTOPILOT_AUDIT_FAILURE_THRESHOLD: '3'
  AUTOPILOT_AUDIT_WINDOW: ''
  AUTOPILOT_AUDIT_EXCLUDE_TAG: 'artifact-streaming=off'
  AUTOPILOT_AUDIT_EXCLUDE: ''
  AUTOPILOT_AUDIT_UNSUPPORTED_OS_SKUS: 'Ubuntu2404,AzureLinux3'
  AUTOPILOT_AUDIT_ARM64_VM_SIZES: ''
  AUTOPILOT_AUDIT_FANOUT: 'false'
  AUTOPILOT_AUDIT_FANOUT_BATCH: '0'
  AUTOPILOT_AUDIT_MIN_KUBERNETES: '1.25'
  AUTOPILOT_AUDIT_CONCURRENCY: '8'
  AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS: '120'
  AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS: '420'
  AUTOPILOT_AUDIT_POLL_SECONDS: '10'
  AUTOPILOT_AUDIT_CONTAINER: containers.audit
  AUTOPILOT_AUDIT_SHARD: '0/1'
  AUTOPILOT_AUDIT_PUBLISH_EVENTS: 'true'
  AUTOPILOT_AUDIT_POOL_SOURCE: 'agentpools'
  AUTOPILOT_SWEEP_MODE: 'enforce'
  AUTOPILOT_SWEEP_SCHEDULE: sweepSchedule
  AUTOPILOT_SWEEP_SUBSCRIPTIONS: ''
  AUTOPILOT_SWEEP_MAX_CONVERSIONS: '1000'
  AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS: '3000'
  AUTOPILOT_SWEEP_PAGE_SIZE: '100'
  AUTOPILOT_SWEEP_REPOSITORIES_PER_ITEM: '10'
  AUTOPILOT_SWEEP_ITEM_SECONDS: '240'
  AUTOPILOT_SWEEP_CONTAINER: containers.sweep
  AUTOPILOT_SWEEP_AUTO_CONVERT: ''
  AUTOPILOT_DEADLETTER_CONTAINER: containers.deadLetter
}
// The platform's settings: identity-based AzureWebJobsStorage (no keys), telemetry through the managed identity, and the
// Python worker's OpenTelemetry switch (with host.json telemetryMode OpenTelemetry: one export, host and worker correlated).
var platformSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  AZURE_CLIENT_ID: identity.properties.clientId
}
var appSettings = union(platformSettings, autopilotSettings, appSettingsOverrides)

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers to the function over the public endpoint (AzureFunction destination); no VNet in this template
  // checkov:skip=CKV_AZURE_17: Event Grid presents no client certificate; deliveries are authorised with the function's system key
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; Event Grid retries cover a cold or failed instance without always-ready cost
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint of our own to probe, and Flex Consumption has no health check; failures alert through Application Insights
  name: 'func-asa-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${containers.package}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): { name: setting.key, value: setting.value }]
    }
  }
  // No basic-auth publishing (FTP or SCM): azd deploys with Entra ID.
  resource ftp 'basicPublishingCredentialsPolicies' = { name: 'ftp', properties: { allow: false } }
  resource scm 'basicPublishingCredentialsPolicies' = { name: 'scm', properties: { allow: false } }
}

// The app identity's roles (docs/settings.md#permissions says why each is needed).
resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource metricsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource topicRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, identity.id, roles.eventGridDataSender)
  scope: topic
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

// Alerts (docs/operate.md): failed invocations and audit runs with error rows here; dead letters per registry topic.
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-asa-${token}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'autopilot'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [{ name: 'operator', emailAddress: alertEmail, useCommonAlertSchema: true }]
  }
}

// Each query returns the offending rows; the rule counts them (timeAggregation Count) and fires above zero.
var logAlerts = [
  {
    name: 'failed-invocations'
    description: 'A function invocation failed (push: Event Grid will retry, then dead-letter; audit: nothing could be read).'
    severity: 2
    query: 'requests | where success == false'
  }
  {
    name: 'audit-error-rows'
    description: 'An audit run could not read some clusters or pools (rows in state error).'
    severity: 3
    query: 'traces | where customDimensions.event == "audit.completed" | where toint(customDimensions["by_state.error"]) > 0'
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in logAlerts: {
  name: 'alert-asa-${alert.name}-${token}'
  location: location
  tags: tags
  properties: {
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [{ query: alert.query, timeAggregation: 'Count', operator: 'GreaterThan', threshold: 0, failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 } }]
    }
    actions: { actionGroups: [actionGroup.id] }
  }
}]

output functionAppName string = functionApp.name
output principalId string = identity.properties.principalId
output topicEndpoint string = topic.properties.endpoint
output storageAccountName string = storage.name
output storageAccountId string = storage.id
output deadLetterContainer string = containers.deadLetter
output pushFunctionResourceId string = '${functionApp.id}/functions/on_image_pushed'
output workspaceId string = logs.id
output actionGroupId string = actionGroup.id
