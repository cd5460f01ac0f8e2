"""snapmerge: the shared core (domain types, ports, chunking, merge protocols, adapters, CLI)."""

import os

# ChromaDB phones home unless told not to; nothing in this project may use the network.
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

__version__ = "0.1.0"
