"""Every flag key, context key and default value in one place (DESIGN §4).

Nothing else in the code base spells a flag key as a bare string: callers use :class:`FlagKey`.
The defaults are what a step gets when no flag document can be read, so each is the safe value:
the legacy path, the kill switch off (the legacy path does not need it), the original chunk and
group sizes (callers normally pass their env-derived values instead) and no fast path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from snapmerge.domain import MergePath


class FlagKey(StrEnum):
    """Every flag snapmerge reads (the keys of a flag document; defaults in ``DEFAULTS``)."""

    FINAL_MERGE_PATH = "final-merge-path"
    KILL_SWITCH = "final-merge-kill-switch"
    CHUNK_SIZE_WORDS = "chunk-size-words"
    CHUNK_SIZE_LINES = "chunk-size-lines"
    GROUP_SIZE = "group-size"
    SINGLE_CHUNK_FAST_PATH = "single-chunk-fast-path"


class ContextKey(StrEnum):
    """Evaluation-context attributes that flag rules may test."""

    COLLECTION = "collection"
    BATCH_ID = "batch_id"
    EXECUTION_ID = "execution_id"
    BUCKET = "bucket"
    """Reserved: the sticky bucket (0..9999) of (flag, salt, targeting key), computed per flag."""


class DecisionReason(StrEnum):
    """Reasons a :class:`~flags.decision.PathDecision` may carry beyond OpenFeature's own."""

    KILL_SWITCH = "KILL_SWITCH"
    ERROR = "ERROR"


DEFAULT_PATH: Final = MergePath.LEGACY

DEFAULTS: Final[dict[FlagKey, bool | int | str]] = {
    FlagKey.FINAL_MERGE_PATH: DEFAULT_PATH.value,
    FlagKey.KILL_SWITCH: False,
    FlagKey.CHUNK_SIZE_WORDS: 15,
    FlagKey.CHUNK_SIZE_LINES: 25,
    FlagKey.GROUP_SIZE: 20,
    FlagKey.SINGLE_CHUNK_FAST_PATH: False,
}

SALT_FIELD: Final = "salt"
"""Optional string next to a feature's ``default``/``rules``; a new salt reshuffles buckets."""

SWITCHBACK_FIELD: Final = "switchback"
"""Optional object next to a feature's ``default``/``rules``: ``{"window_seconds": 1..86400,
"by_collection": true}``. A percentage rule of such a flag buckets the (collection, time window)
unit instead of the targeting key (:func:`flags.bucketing.unit_key`); Powertools ignores it."""
SWITCHBACK_WINDOW: Final = "window_seconds"
SWITCHBACK_BY_COLLECTION: Final = "by_collection"
MAX_SWITCHBACK_WINDOW_SECONDS: Final = 86_400
