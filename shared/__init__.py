"""Domain logic of the Artifact Streaming Autopilot: push path, audit path and their Azure clients (no azure.functions here)."""
