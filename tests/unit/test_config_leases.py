"""Start-up refusal of lease settings that cannot work, and of the unsafe per-batch lock scope."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from snapmerge.config import DEFAULT_PHASE_LEASE, DEFAULT_VERIFY_MARGIN, Settings
from snapmerge.domain import LockScope
from snapmerge.errors import InvalidEventError

BASE = {"CHROMADB_BUCKET": "b", "DYNAMODB_TABLE_NAME": "t"}


def test_defaults_give_short_phase_leases_above_the_verify_margin() -> None:
    settings = Settings.from_env(BASE)

    assert settings.phase_lease == DEFAULT_PHASE_LEASE == timedelta(seconds=45)
    assert settings.verify_margin == DEFAULT_VERIFY_MARGIN == timedelta(seconds=30)
    assert settings.lock_duration == timedelta(minutes=16)


def test_the_phase_lease_and_margin_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {**BASE, "SNAPMERGE_PHASE_LEASE_SECONDS": "20", "SNAPMERGE_VERIFY_MARGIN_SECONDS": "10"}
    )

    assert (settings.phase_lease, settings.verify_margin) == (
        timedelta(seconds=20),
        timedelta(seconds=10),
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LOCK_DURATION_MINUTES": "0.4"}, "LOCK_DURATION_MINUTES=0.4"),  # 24 s < 30 s margin
        ({"SNAPMERGE_PHASE_LEASE_SECONDS": "30"}, "SNAPMERGE_PHASE_LEASE_SECONDS=30"),
        (
            {"SNAPMERGE_PHASE_LEASE_SECONDS": "40", "SNAPMERGE_VERIFY_MARGIN_SECONDS": "36"},
            "SNAPMERGE_VERIFY_MARGIN_SECONDS=36",
        ),
        (
            {"LOCK_DURATION_MINUTES": "1", "HEARTBEAT_INTERVAL_SECONDS": "120"},
            "HEARTBEAT_INTERVAL_SECONDS=120",
        ),
    ],
    ids=["lock-lease-below-margin", "phase-lease-at-margin", "margin-raised", "heartbeat-too-slow"],
)
def test_lease_settings_that_cannot_work_are_refused_at_start_up(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        Settings.from_env({**BASE, **env})

    assert named in str(caught.value)
    assert "cannot work" in str(caught.value)


def test_a_merge_under_a_lease_shorter_than_the_margin_could_never_publish() -> None:
    """Why the refusal: verify renews and still finds less than the margin left."""
    from snapmerge.adapters.memory_lock import MemoryLeaseTable
    from snapmerge.errors import LeaseLostError
    from snapmerge.lock import LeaseLock

    lock = LeaseLock(
        MemoryLeaseTable(), duration=timedelta(seconds=24), heartbeat_interval=timedelta(hours=1)
    )
    with lock.acquire("chroma-words-update", "words") as lease, pytest.raises(LeaseLostError):
        lease.verify(DEFAULT_VERIFY_MARGIN)


def test_per_batch_scope_is_refused_without_the_acknowledgement() -> None:
    with pytest.raises(InvalidEventError) as caught:
        Settings.from_env({**BASE, "SNAPMERGE_LOCK_SCOPE": "per_batch"})

    message = str(caught.value)
    assert "SNAPMERGE_ALLOW_UNSAFE_PER_BATCH" in message
    assert "overwritten" in message


def test_acknowledged_per_batch_scope_runs_with_a_loud_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="snapmerge.config"):
        settings = Settings.from_env(
            {
                **BASE,
                "SNAPMERGE_LOCK_SCOPE": "per_batch",
                "SNAPMERGE_ALLOW_UNSAFE_PER_BATCH": "true",
            }
        )

    assert settings.lock_scope is LockScope.PER_BATCH
    assert any("UNSAFE lock scope" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", ["efs", "s3", "auto", "anything"])
def test_the_originals_storage_mode_is_accepted_and_ignored(mode: str) -> None:
    """The cache always lives under CHROMA_ROOT: CHROMADB_STORAGE_MODE changes no setting."""
    assert Settings.from_env({**BASE, "CHROMADB_STORAGE_MODE": mode}) == Settings.from_env(BASE)


def test_enqueue_by_listing_is_off_unless_asked_for() -> None:
    assert Settings.from_env(BASE).enqueue_by_listing is False
    assert Settings.from_env({**BASE, "SNAPMERGE_ENQUEUE_BY_LISTING": "1"}).enqueue_by_listing
    assert not Settings.from_env({**BASE, "SNAPMERGE_ENQUEUE_BY_LISTING": "0"}).enqueue_by_listing
