"""The errors the AWS adapters raise keep what they carry across a process boundary (the
controller's race tests run writers in child processes)."""

from __future__ import annotations

import pickle

from snapmerge.errors import ConditionFailedError, MissingResourceError, StoreError


def test_codes_and_conditions_survive_pickling() -> None:
    store = pickle.loads(pickle.dumps(MissingResourceError("GetItem: gone", code="Nope")))
    assert type(store) is MissingResourceError and isinstance(store, StoreError)
    assert (str(store), store.code) == ("GetItem: gone", "Nope")
    lost = pickle.loads(pickle.dumps(ConditionFailedError("table 't'", "attribute_not_exists(PK)")))
    assert (lost.where, lost.condition) == ("table 't'", "attribute_not_exists(PK)")
    assert str(lost) == "table 't': condition 'attribute_not_exists(PK)' refused"
