"""OpenFeature's own ``InMemoryProvider`` serving ``final-merge-path``: the baseline that the flag
benchmark (``bench/flags.py``) measures our :class:`~flags.provider.DocumentProvider` against.

It lives here because only ``flags`` imports ``openfeature`` (ADR 0001): the benchmark gets the
baseline provider, evaluation contexts and registered clients from this package.
"""

from __future__ import annotations

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flags.keys import ContextKey, FlagKey
from snapmerge.domain import Database, MergePath

__all__ = ["in_memory_path_provider"]


def _words_first(flag: InMemoryFlag[str], ctx: EvaluationContext) -> FlagResolutionDetails[str]:
    """The targeted document's one rule (collection ``words`` → two_phase), as an evaluator."""
    words = ctx.attributes.get(ContextKey.COLLECTION.value) == Database.WORDS.value
    variant = MergePath.TWO_PHASE.value if words else flag.default_variant
    return FlagResolutionDetails(
        flag.variants[variant], reason=Reason.TARGETING_MATCH, variant=variant
    )


def in_memory_path_provider(*, targeted: bool) -> InMemoryProvider:
    """``final-merge-path`` in an InMemoryProvider: two_phase for everyone, or (``targeted``)
    legacy by default with two_phase for the ``words`` collection."""
    flag = InMemoryFlag(
        MergePath.LEGACY.value if targeted else MergePath.TWO_PHASE.value,
        {p.value: p.value for p in MergePath},
        context_evaluator=_words_first if targeted else None,
    )
    return InMemoryProvider({FlagKey.FINAL_MERGE_PATH.value: flag})
