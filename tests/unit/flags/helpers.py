"""Documents and a manual clock shared by the flag tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider

from flags.stores import DEFAULT_DOCUMENT

# The packaged document leaves the sizing knobs out (the env vars apply); the tests use a
# document that sets them too, so every flag kind is exercised.
DEFAULT_DOC: dict[str, Any] = {
    **json.loads(DEFAULT_DOCUMENT.read_text()),
    "chunk-size-words": {"default": 15, "boolean_type": False},
    "chunk-size-lines": {"default": 25, "boolean_type": False},
    "group-size": {"default": 20, "boolean_type": False},
}


def make_doc(**features: dict[str, Any]) -> dict[str, Any]:
    """The packaged default document with some features replaced (``_`` in names becomes ``-``)."""
    doc = copy.deepcopy(DEFAULT_DOC)
    for name, feature in features.items():
        doc[name.replace("_", "-")] = feature
    return doc


def path_feature(default: str = "legacy", **rules: dict[str, Any]) -> dict[str, Any]:
    feature: dict[str, Any] = {"default": default, "boolean_type": False}
    if rules:
        feature["rules"] = rules
    return feature


def when(key: str, value: Any, action: str = "EQUALS", result: Any = "two_phase") -> dict[str, Any]:
    """A one-condition rule."""
    return {"when_match": result, "conditions": [{"action": action, "key": key, "value": value}]}


def kill(on: bool) -> dict[str, Any]:
    return {"default": on}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StaticStore(StoreProvider):  # type: ignore[misc]
    """A Powertools store that serves one document as is (for evaluating with ``FeatureFlags``)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self.doc = doc

    @property
    def get_raw_configuration(self) -> dict[str, Any]:
        return self.doc

    def get_configuration(self) -> dict[str, Any]:
        return self.doc
