"""Audit path: a scheduled compliance audit of AKS node pools that enables Artifact Streaming where it is missing and safe."""
