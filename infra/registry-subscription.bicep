// One registry's Event Grid subscription to the push function: ImagePushed only, tagged pushes only, one event per
// delivery, Event Grid's full retry schedule, then a dead letter in the app's storage written with the topic's identity.
param systemTopicName string
param functionResourceId string
param deadLetterStorageId string
param deadLetterContainer string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
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
    filter: {
      includedEventTypes: ['Microsoft.ContainerRegistry.ImagePushed']
      // A push by digest carries no data.target.tag: streaming follows tags, so Event Grid drops it before delivery
      // (the function would skip it as "untagged" anyway).
      advancedFilters: [{ operatorType: 'IsNotNull', key: 'data.target.tag' }]
    }
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: { resourceId: deadLetterStorageId, blobContainerName: deadLetterContainer }
      }
    }
  }
}
