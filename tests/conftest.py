"""Shared fixtures. Every server a test needs is started here, on 127.0.0.1 only."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ["ANONYMIZED_TELEMETRY"] = "False"

from snapmerge.embedded import EmbeddedAWS


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedAWS]:
    """One serialised moto server for the whole session."""
    with EmbeddedAWS() as cloud:
        yield cloud


@dataclass(frozen=True)
class AwsEnv:
    """A fresh bucket and lock table on the embedded server, with the environment pointing there."""

    cloud: EmbeddedAWS
    bucket: str
    table: str
    endpoint: str


@pytest.fixture
def aws(embedded_server: EmbeddedAWS, monkeypatch: pytest.MonkeyPatch) -> AwsEnv:
    suffix = uuid.uuid4().hex[:10]
    bucket, table = f"snapmerge-{suffix}", f"locks-{suffix}"
    for key, value in embedded_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHROMADB_BUCKET", bucket)
    monkeypatch.setenv("S3_BUCKET", bucket)
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", table)
    embedded_server.create_bucket(bucket)
    embedded_server.create_table(table)
    return AwsEnv(embedded_server, bucket, table, embedded_server.endpoint)
