"""Sticky bucketing: the documented test vectors, and monotonic rollouts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.bucketing import bucket_of, in_rollout, percent_of, threshold_for

# The same table is published in docs/flags.md ("Test vectors"); change both or neither.
VECTORS = [
    ("final-merge-path", "", "batch-0001", 1878),
    ("final-merge-path", "", "batch-0002", 1336),
    ("final-merge-path", "v2", "batch-0001", 1726),
    ("final-merge-path", "", "words", 7246),
    ("final-merge-path", "", "lines", 527),
    ("chunk-size-words", "", "batch-0001", 5042),
    ("final-merge-path", "", "", 8684),
]


@pytest.mark.parametrize(("flag", "salt", "key", "bucket"), VECTORS)
def test_published_vectors(flag: str, salt: str, key: str, bucket: int) -> None:
    assert bucket_of(flag, salt, key) == bucket


def test_vectors_match_the_docs() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[3] / "docs" / "flags.md"
    text = docs.read_text()
    for flag, salt, key, bucket in VECTORS:
        assert f'| "{flag}" | "{salt}" | "{key}" | {bucket} |' in text


def test_flag_and_salt_both_change_the_bucket() -> None:
    assert bucket_of("final-merge-path", "", "batch-0001") != bucket_of(
        "final-merge-path", "v2", "batch-0001"
    )
    assert bucket_of("final-merge-path", "", "batch-0001") != bucket_of(
        "chunk-size-words", "", "batch-0001"
    )


@pytest.mark.parametrize(
    ("percent", "threshold"),
    [(0, 0), (100, 10000), ("12.5", 1250), (0.01, 1), ("33.33", 3333), (Decimal("5"), 500)],
)
def test_thresholds(percent: object, threshold: int) -> None:
    assert threshold_for(percent) == threshold  # type: ignore[arg-type]
    assert percent_of(threshold) == Decimal(str(percent))


@pytest.mark.parametrize("bad", ["0.001", -1, 100.01, "x", "nan", "inf"])
def test_refused_percentages(bad: object) -> None:
    with pytest.raises(ValueError):
        threshold_for(bad)  # type: ignore[arg-type]


def test_zero_includes_nobody_and_hundred_includes_everybody() -> None:
    keys = [f"batch-{i}" for i in range(500)]
    assert not any(in_rollout("f", "", k, 0) for k in keys)
    assert all(in_rollout("f", "", k, 100) for k in keys)


def test_buckets_spread_evenly() -> None:
    """Deterministic: 20,000 fixed keys into 10 deciles, each within 10 % of its share."""
    counts = [0] * 10
    for i in range(20_000):
        counts[bucket_of("final-merge-path", "", f"batch-{i}") // 1000] += 1
    assert all(1800 <= c <= 2200 for c in counts), counts


@given(
    key=st.text(max_size=40),
    salt=st.text(max_size=10),
    low=st.integers(0, 10_000),
    high=st.integers(0, 10_000),
)
def test_raising_the_percentage_never_removes_a_key(
    key: str, salt: str, low: int, high: int
) -> None:
    low, high = sorted((low, high))
    p_low, p_high = percent_of(low), percent_of(high)
    if in_rollout("final-merge-path", salt, key, p_low):
        assert in_rollout("final-merge-path", salt, key, p_high)


@given(key=st.text(max_size=40), salt=st.text(max_size=10))
def test_bucket_range_and_stability(key: str, salt: str) -> None:
    b = bucket_of("final-merge-path", salt, key)
    assert 0 <= b < 10_000
    assert b == bucket_of("final-merge-path", salt, key)
