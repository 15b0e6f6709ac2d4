"""OCI and Docker media types and the streaming artifact type: one definition each, no SDK imports."""

STREAMING_ARTIFACT_TYPE = "application/vnd.azure.artifact.streaming.v1"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SINGLE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
IMAGE_MEDIA_TYPES = SINGLE_TYPES | INDEX_TYPES  # the only types a conversion accepts (UNSUPPORTED_MEDIATYPE otherwise)
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
