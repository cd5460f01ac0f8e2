"""A stream compactor that behaves as the original pipeline's does (a fixture, issue 9 part 6).

Written from reading the original (its stream compaction handler, its lock manager and its
snapshot writer), never copied or imported. What it reproduces, step by step, because the loss
happens between the steps:

* ``take_lock``: the lock row ``chroma-{db}-update`` replaced whole (a conditional PutItem: no row,
  or ``expires`` below now as text) with a 1-minute lease and a 2-minute heartbeat. ``lapsed=True``
  writes it as it stands once the heartbeat has not come in time: ``expires`` already past.
* ``build``: read the pointer as plain text (no ETag), download that whole version, apply its
  changes, and upload every file to a new ``YYYYMMDD_HHMMSS`` prefix with a fresh
  ``.snapshot_hash`` (as its ``upload_snapshot_atomic`` does).
* ``publish``: its heartbeat rewrites the row with its own owner, checking only that a row exists
  (it takes the row back from whoever holds it), then its ownership check passes, then the pointer
  is written WITHOUT a condition, then every version prefix but the 4 newest by id is deleted, then
  the row is deleted (conditional on its owner).

It drives real S3 and DynamoDB calls on the embedded server and real ChromaDB.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from snapmerge import aws, synth
from snapmerge.domain import Keys, Record, VersionId
from snapmerge.snapshot_hash import hash_files
from snapmerge.transfer import local_files
from tests.functional.merge_rig import DB, Rig

LEASE = timedelta(minutes=1)
KEEP_VERSIONS = 4


class CompactorRefused(Exception):
    """The compactor's own checks stopped it (what it logs and gives up on)."""


@dataclass
class OriginalCompactor:
    rig: Rig
    lock_id: str = f"chroma-{DB.value}-update"
    owner: str = field(default_factory=lambda: str(uuid.uuid4()))
    read_version: VersionId | None = None
    version: VersionId | None = None
    deleted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dynamo: Any = aws.client("dynamodb")

    # -- the lock, as its lock manager writes it ------------------------------------------------
    def take_lock(self, *, lapsed: bool = False) -> None:
        now = datetime.now(UTC)
        granted = now - 2 * LEASE if lapsed else now  # its heartbeat never came within the lease
        self.dynamo.put_item(
            TableName=self.rig.table.table_name,
            Item=self._row(granted),
            ConditionExpression="attribute_not_exists(PK) OR expires < :now",
            ExpressionAttributeValues={":now": {"S": now.isoformat()}},
        )

    def _heartbeat(self) -> None:
        """Rewrites the whole row, ours again, whoever held it: only its existence is checked."""
        self.dynamo.put_item(
            TableName=self.rig.table.table_name,
            Item=self._row(datetime.now(UTC)),
            ConditionExpression="attribute_exists(PK) AND attribute_exists(SK)",
        )

    def _owns(self) -> bool:
        item = self.dynamo.get_item(TableName=self.rig.table.table_name, Key=self._key()).get(
            "Item"
        )
        if item is None or item.get("owner", {}).get("S") != self.owner:
            return False
        expires = datetime.fromisoformat(item["expires"]["S"].replace("Z", "+00:00"))
        return expires > datetime.now(UTC)

    def _release(self) -> None:
        self.dynamo.delete_item(
            TableName=self.rig.table.table_name,
            Key=self._key(),
            ConditionExpression="#o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": {"S": self.owner}},
        )

    def _key(self) -> dict[str, Any]:
        return {"PK": {"S": f"LOCK#{DB.value}#{self.lock_id}"}, "SK": {"S": "LOCK"}}

    def _row(self, granted: datetime) -> dict[str, Any]:
        expires = (granted + LEASE).isoformat()
        return {
            **self._key(),
            "GSI1PK": {"S": f"LOCK#{DB.value}"},
            "GSI1SK": {"S": f"EXPIRES#{expires}"},
            "TYPE": {"S": "COMPACTION_LOCK"},
            "owner": {"S": self.owner},
            "expires": {"S": expires},
            "collection": {"S": DB.value},
            "heartbeat": {"S": granted.isoformat()},
        }

    # -- the snapshot, as its writer handles it --------------------------------------------------
    def build(self, changes: list[Record]) -> VersionId:
        """Read the pointer, download that version whole, apply ``changes``, upload every file."""
        blobs = self.rig.blobs
        pointer = blobs.get(Keys.pointer(DB))
        if pointer is None:
            raise CompactorRefused("no pointer")
        self.read_version = VersionId(pointer.body.decode().strip())
        work = self.rig.download(Keys.version_prefix(DB, self.read_version))
        delta = self.rig.root / f"compactor-delta-{uuid.uuid4().hex[:8]}"
        synth.write_index(self.rig.engine, delta, changes, DB.value)
        self.rig.engine.merge(work, [delta], collection=DB.value)
        shutil.rmtree(delta, ignore_errors=True)
        version = VersionId(datetime.now(UTC).strftime("%Y%m%d_%H%M%S"))
        prefix = Keys.version_prefix(DB, version)
        for rel, path in local_files(work, {".snapshot_hash"}):
            blobs.upload_file(prefix + rel, path)
        digest = hash_files(local_files(work, {".snapshot_hash"})).to_json()
        blobs.put(prefix + ".snapshot_hash", digest.encode())
        self.version = version
        return version

    def publish(self) -> VersionId:
        """Heartbeat (takes the row back), ownership check, unconditional pointer, clean-up."""
        assert self.version is not None
        self._heartbeat()
        if not self._owns():
            raise CompactorRefused(f"lost lock {self.lock_id}")
        self.rig.blobs.put(Keys.pointer(DB), self.version.encode())
        self._cleanup()
        self._release()
        return self.version

    def _cleanup(self) -> None:
        """Every version prefix but the newest 4 by id order goes."""
        prefix = Keys.versions_prefix(DB)
        names = {k[len(prefix) :].split("/", 1)[0] for k in self.rig.blobs.list(prefix)}
        for name in sorted(names, reverse=True)[KEEP_VERSIONS:]:
            keys = self.rig.blobs.list(f"{prefix}{name}/")
            self.rig.blobs.delete(keys)
            self.deleted.append(name)
