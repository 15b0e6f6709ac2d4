"""Push path: every new image tag pushed to ACR gets its streaming artifact, exactly once."""
