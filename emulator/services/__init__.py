"""The emulated Azure services, one module each, each with its own routing table."""
