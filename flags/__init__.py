"""Feature flags for snapmerge: keys, Powertools-schema documents, stores, an OpenFeature provider.

Only this package imports ``openfeature`` and only :mod:`flags.client` calls its API. Start with
:func:`bootstrap` (once per process) and :func:`resolve_pinned` (once per step).

The public API is ``__all__`` below (kept by ``tests/unit/test_public_api.py``):

* the keys — :class:`FlagKey`, :class:`ContextKey`, and ``DEFAULTS`` (every flag's default);
* the provider — :class:`DocumentProvider`, an OpenFeature provider over a
  :class:`FlagDocumentStore` (:class:`FileStore`, :class:`MemoryStore`, or the one
  :func:`store_from_env` picks) with its :class:`CacheSettings`; :class:`FlagClient` and
  :func:`bootstrap` wire it into OpenFeature;
* the documents — :func:`validate_document` (:class:`FlagDocumentError` when it may not be
  served), :func:`compile_document` into a :class:`CompiledDocument` whose flags give an
  :class:`Evaluation`, :func:`encode_document` / :func:`decode_document`, and
  :func:`rollout_rule` for a percentage rollout bucketed by :func:`bucket_of` /
  :func:`threshold_for`;
* the decision — :func:`resolve_pinned` gives a :class:`PathDecision`.
"""

from flags.bucketing import bucket_of, threshold_for
from flags.client import FlagClient, bootstrap
from flags.compiled import CompiledDocument, Evaluation, compile_document
from flags.decision import PathDecision, resolve_pinned
from flags.document import (
    FlagDocumentError,
    decode_document,
    encode_document,
    rollout_rule,
    validate_document,
)
from flags.keys import DEFAULTS, ContextKey, FlagKey
from flags.provider import DocumentProvider
from flags.stores import CacheSettings, FileStore, FlagDocumentStore, MemoryStore, store_from_env

__all__ = [
    "DEFAULTS",
    "CacheSettings",
    "CompiledDocument",
    "ContextKey",
    "DocumentProvider",
    "Evaluation",
    "FileStore",
    "FlagClient",
    "FlagDocumentError",
    "FlagDocumentStore",
    "FlagKey",
    "MemoryStore",
    "PathDecision",
    "bootstrap",
    "bucket_of",
    "compile_document",
    "decode_document",
    "encode_document",
    "resolve_pinned",
    "rollout_rule",
    "store_from_env",
    "threshold_for",
    "validate_document",
]
