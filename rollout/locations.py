"""Where a rollout's record and metrics live: the state store, the audit log and the metric
source, opened from the location strings the CLI takes, with its local defaults.

A location is a file path (the default, under ``.snapmerge/`` in the working directory),
``s3://bucket/key`` for the state or ``s3://bucket/prefix/`` for the audit log, or
``dynamodb://table/name`` for either. Metrics come from an EMF file or a CloudWatch Logs group.
The table of options, environment variables and defaults is in :mod:`rollout.cli`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rollout.audit import AuditLog, JsonlAuditLog, S3AuditLog
from rollout.dynamo import DynamoAuditLog, DynamoStateStore, split_url
from rollout.metric_names import EMF_FILE_ENV, default_namespace
from rollout.signing import AuditKey
from rollout.sources import CloudWatchLogsSource, EmfFileSource, MetricSource
from rollout.state import BlobStateStore, FileStateStore, StateStore
from snapmerge.errors import InvalidEventError

HOME = Path(".snapmerge")


def env_or(name: str, default: Path) -> str:
    return os.environ.get(name) or str(default)


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidEventError(f"{url!r} is not s3://bucket/key")
    return bucket, key


def _blobs(bucket: str) -> Any:
    from snapmerge.adapters.s3_store import S3BlobStore  # only when S3 is asked for

    return S3BlobStore(bucket)


def open_state(where: str) -> StateStore:
    if where.startswith("s3://"):
        bucket, key = _split_s3(where)
        return BlobStateStore(_blobs(bucket), key or "rollout/state.json")
    if where.startswith("dynamodb://"):
        return DynamoStateStore(*split_url(where))
    return FileStateStore(where)


def open_audit(where: str, key: AuditKey | None = None) -> AuditLog:
    if where.startswith("s3://"):
        bucket, prefix = _split_s3(where)
        return S3AuditLog(_blobs(bucket), prefix or "rollout/audit/", key)
    if where.startswith("dynamodb://"):
        table, name = split_url(where)
        return DynamoAuditLog(table, name, key)
    return JsonlAuditLog(where, key)


def open_source(args: argparse.Namespace, *, must_exist: bool = False) -> MetricSource:
    if getattr(args, "log_group", None):
        return CloudWatchLogsSource(args.log_group, namespace=args.namespace)
    return EmfFileSource(
        args.emf, strict=not args.skip_malformed, namespace=args.namespace, must_exist=must_exist
    )


def source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emf", default=env_or(EMF_FILE_ENV, HOME / "emf.jsonl"))
    parser.add_argument("--log-group", default=os.environ.get("SNAPMERGE_LOG_GROUP"))
    parser.add_argument("--namespace", default=default_namespace())
    parser.add_argument(
        "--skip-malformed", action="store_true", help="skip malformed EMF lines (else an error)"
    )
