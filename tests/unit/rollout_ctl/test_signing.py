"""The audit key: from the environment or an SSM SecureString, never printed, refused when weak."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.signing import AuditKey, AuditKeyError, key_from_env
from snapmerge import aws as aws_clients
from snapmerge.errors import StoreError


def test_no_key_configured_is_none() -> None:
    assert key_from_env({}) is None


def test_the_key_from_the_environment() -> None:
    key = key_from_env({"SNAPMERGE_AUDIT_KEY": "k" * 32})
    assert key == AuditKey(b"k" * 32)
    assert "k" * 16 not in repr(key) and key is not None and key.key_id in repr(key)
    assert key.valid("m", key.sign("m")) and not key.valid("m", AuditKey(b"x" * 32).sign("m"))


def test_a_short_key_or_two_sources_are_refused() -> None:
    with pytest.raises(AuditKeyError, match="at least 16 bytes"):
        key_from_env({"SNAPMERGE_AUDIT_KEY": "short"})
    with pytest.raises(AuditKeyError, match="not both"):
        key_from_env({"SNAPMERGE_AUDIT_KEY": "k" * 32, "SNAPMERGE_AUDIT_KEY_SSM": "/p"})


def test_the_key_from_an_ssm_secure_string(aws: Any) -> None:
    ssm = aws_clients.client("ssm")
    ssm.put_parameter(Name="/snapmerge/audit-key", Value="s" * 40, Type="SecureString")
    key = key_from_env({"SNAPMERGE_AUDIT_KEY_SSM": "/snapmerge/audit-key"})
    assert key == AuditKey(b"s" * 40)
    with pytest.raises(StoreError, match="ParameterNotFound"):
        key_from_env({"SNAPMERGE_AUDIT_KEY_SSM": "/snapmerge/missing"})
