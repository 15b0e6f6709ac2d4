"""Local Azure for tests, the demo and benchmarks: ARM, ACR data plane, managed identity and Event Grid over HTTPS.

Never imported by product code; product code reaches it through settings (`Emulator.env`) only.
"""

from .runtime import Emulator

__all__ = ["Emulator"]
