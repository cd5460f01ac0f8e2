"""Feature flags for snapmerge: keys, Powertools-schema documents, stores, an OpenFeature provider.

Only this package imports ``openfeature`` and only :mod:`flags.client` calls its API. Start with
:func:`bootstrap` (once per process) and :func:`resolve_pinned` (once per step).
"""

from flags.bucketing import bucket_of, threshold_for
from flags.client import FlagClient, bootstrap
from flags.decision import PathDecision, resolve_pinned
from flags.keys import DEFAULTS, ContextKey, FlagKey
from flags.stores import CacheSettings, FlagDocumentStore, store_from_env

__all__ = [
    "DEFAULTS",
    "CacheSettings",
    "ContextKey",
    "FlagClient",
    "FlagDocumentStore",
    "FlagKey",
    "PathDecision",
    "bootstrap",
    "bucket_of",
    "resolve_pinned",
    "store_from_env",
    "threshold_for",
]
