"""What a final merge builds on, and what it may delete afterwards: pure decisions over a store.

The base: the pointer; with none, the original reader's ``latest/``; a missing pointer beside
complete versions is refused (or, opted in, the newest complete version). Clean-up: exactly the
intermediates a batch's workflow wrote under its own id.
"""

from __future__ import annotations

import re

from snapmerge.commit_log import VersionManifest
from snapmerge.domain import LATEST_DIRECT, FinalMergeRequest, Keys, Pointer
from snapmerge.errors import SnapshotError
from snapmerge.ports import BlobStore
from snapmerge.snapshots import SnapshotStore

REBUILD_ENV = "SNAPMERGE_REBUILD_FROM_NEWEST"
INTERMEDIATE = "intermediate/"


def resolve_base(store: SnapshotStore, *, rebuild_from_newest: bool) -> Pointer | None:
    """The pointer; with none, ``latest/`` (the original reader's fallback), else nothing.

    A missing pointer beside complete versions is never a first publish (it would publish a
    snapshot holding only this batch): a SnapshotError naming the newest complete version,
    unless the operator opted in (``SNAPMERGE_REBUILD_FROM_NEWEST``) to build on it.
    """
    pointer = store.read_pointer()
    if pointer is not None:
        return pointer
    newest = store.newest_complete()
    if newest is None:
        return store.legacy_latest_base()
    if rebuild_from_newest:
        return Pointer(newest, "", exists=False)
    raise SnapshotError(
        f"{store.pointer_key} is missing but complete versions exist (newest: {newest});"
        " refusing to publish a snapshot holding only this batch. Restore the pointer (its"
        f" body is the version id, e.g. {newest}), or set {REBUILD_ENV}=1 to build on {newest}"
    )


def check_base(store: SnapshotStore, base: Pointer | None) -> VersionManifest | None:
    """A base naming a missing or incomplete version is an error, never a base.

    Returns the base's manifest (None for ``latest/`` and for the original pipeline's versions,
    which have none), read once: the caller needs its dimension too.
    """
    if base is None:
        return None
    if base.version == LATEST_DIRECT:
        if not store.has_legacy_latest():
            raise SnapshotError(f"{Keys.legacy_latest_prefix(store.db)} has no chroma.sqlite3")
        return None
    manifest = store.manifest(base.version)
    if manifest is None and not store.original_complete(base.version):
        raise SnapshotError(
            f"{store.pointer_key} names version {base.version}, which is missing or incomplete"
        )
    return manifest


def batch_intermediates(blobs: BlobStore, request: FinalMergeRequest) -> list[str]:
    """Every key of this batch's intermediates, and nothing else.

    The request's keys, each as a delimited prefix (``chunk-1`` never takes ``chunk-10``), plus
    the chunk and group outputs the workflow names after this batch id:
    ``intermediate/{b}/chunk-{i}/…`` and ``intermediate/{b}-group-{g}/merged/…``. Never
    ``b-group-7``'s or ``b/x``'s when finishing ``b``; never a delta (the fast path's inputs).
    """
    keys: set[str] = set()
    for key in request.intermediate_keys:
        if key.startswith(INTERMEDIATE):
            keys.update(k for k in blobs.list(key) if _under(k, key))
    own = _own_intermediate(request.batch_id)
    for prefix in (f"{INTERMEDIATE}{request.batch_id}/", f"{INTERMEDIATE}{request.batch_id}-"):
        keys.update(k for k in blobs.list(prefix) if own.match(k))
    return sorted(keys)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _own_intermediate(batch_id: str) -> re.Pattern[str]:
    """This batch's chunk and group outputs, but not another batch's nested below them: a batch
    named ``b/chunk-1`` writes ``intermediate/b/chunk-1/chunk-0/…`` and
    ``intermediate/b/chunk-1-group-0/merged/…``, and a Chroma directory itself never holds a
    ``chunk-N`` or ``…-group-N/merged`` directory."""
    other = r"(?!(?:[^/]+/)*chunk-\d+/)(?!.*-group-\d+/merged/)"
    own = r"(/chunk-\d+/|-group-\d+/merged/)"
    return re.compile(rf"^{INTERMEDIATE}{re.escape(batch_id)}{own}{other}")
