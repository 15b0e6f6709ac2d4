// One registry's system topic may write dead letters into the app's dead-letter container, and nowhere else.
param storageAccountName string
param containerName string
param topicPrincipalId string
param registryId string

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
  resource blobs 'blobServices' existing = {
    name: 'default'
    resource deadLetter 'containers' existing = { name: containerName }
  }
}

resource writeDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, registryId, storageBlobDataContributor, containerName)
  scope: storage::blobs::deadLetter
  properties: {
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}
