"""What a final merge builds on, and what it may delete afterwards: pure decisions over a store.

The base: the pointer; with none, the original reader's ``latest/``; a missing pointer beside
complete versions is refused (or, opted in, the top of the published chain: never a newer upload
that no record says was published). Clean-up: exactly the
intermediates a batch's workflow wrote under its own id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from snapmerge.domain import LATEST_DIRECT, FinalMergeRequest, Keys, Pointer, VersionId
from snapmerge.errors import SnapshotError
from snapmerge.manifest import VersionManifest
from snapmerge.ports import BlobStore
from snapmerge.snapshots import SnapshotStore

REBUILD_ENV = "SNAPMERGE_REBUILD_FROM_NEWEST"
INTERMEDIATE = "intermediate/"


@dataclass(frozen=True)
class PublishedHead:
    """What the log says the pointer named last, for when the pointer object is gone.

    ``top``: the published chain's newest version (None: no record of any publish).
    ``undecided``: complete versions above it (or, with no top, any) that no record says were
    published: an upload whose run died before its CAS, or just after it, before its mark.
    ``forks``: more than one chain top (the chain should be linear): nothing is chosen.
    """

    top: VersionId | None
    undecided: tuple[VersionId, ...] = ()
    forks: tuple[VersionId, ...] = ()


def published_head(store: SnapshotStore) -> PublishedHead:
    """The top of the published chain, from published marks and receipts (never from id order).

    A version is published if it is marked, has a receipt, or is below one that is (each publish's
    base was the pointer when it swapped). Reads every mark, receipt and log entry: it runs only
    when the pointer is missing.
    """
    entries: dict[VersionId, VersionManifest | None] = {}

    def entry(version: VersionId) -> VersionManifest | None:
        if version not in entries:
            entries[version] = store.log.entry(version)
        return entries[version]

    marked = set(store.log.published_marks()) | _receipt_versions(store)
    below: set[VersionId] = set()
    for version in marked:
        current = entry(version)
        while current is not None and current.base_version is not None:
            if current.base_version in below:
                break
            below.add(current.base_version)
            current = entry(current.base_version)
    published = marked | below
    tops = sorted(marked - below)
    if len(tops) > 1:
        return PublishedHead(None, forks=tuple(tops))
    top = tops[0] if tops else None
    undecided = []
    for version in store.log.versions():
        found = entry(version)
        if found is None or not found.complete or version in published:
            continue
        if top is None or _descends(found, top, published, entry):
            undecided.append(version)
    if top is None:
        undecided += [v for v in store.list_versions() if store.original_complete(v)]
    return PublishedHead(top, tuple(sorted(undecided, reverse=True)))


def _descends(
    found: VersionManifest,
    top: VersionId,
    published: set[VersionId],
    entry: Callable[[VersionId], VersionManifest | None],
) -> bool:
    """Is ``found`` built on ``top`` through versions that are not published?"""
    seen: set[VersionId] = set()
    base = found.base_version
    while base is not None and base not in published and base not in seen:
        seen.add(base)
        step = entry(base)
        base = step.base_version if step is not None else None
    return base == top


def _receipt_versions(store: SnapshotStore) -> set[VersionId]:
    """Every version a receipt names (receipts are written after the swap)."""
    found = set()
    prefix = Keys.receipts_prefix(store.db)
    for key in store.blobs.list(prefix):
        payload = store.read_receipt(key[len(prefix) : -len(".json")])
        if payload is not None and payload.get("version"):
            found.add(VersionId(str(payload["version"])))
    return found


def resolve_base(store: SnapshotStore, *, rebuild_from_newest: bool) -> Pointer | None:
    """The pointer; with none, ``latest/`` (the original reader's fallback), else nothing.

    A missing pointer beside complete versions is never a first publish (it would publish a
    snapshot holding only this batch): a SnapshotError naming the top of the published chain,
    unless the operator opted in (``SNAPMERGE_REBUILD_FROM_NEWEST``) to build on that top. Never
    on a newer upload no record says was published: its run died before or right after its CAS
    and never answered, and its retry applies its batch again on the rebuilt chain.
    """
    pointer = store.read_pointer()
    if pointer is not None:
        return pointer
    head = published_head(store)
    if head.top is None and not head.undecided and not head.forks:
        return store.legacy_latest_base()
    if head.top is not None and rebuild_from_newest:
        return Pointer(head.top, "", exists=False)
    raise SnapshotError(_missing_pointer(store, head))


def _missing_pointer(store: SnapshotStore, head: PublishedHead) -> str:
    key = store.pointer_key
    undecided = ", ".join(head.undecided[:5]) + (" …" if len(head.undecided) > 5 else "")
    if head.forks:
        return (
            f"{key} is missing and the published chain has several tops"
            f" ({', '.join(head.forks)}); refusing to choose. Restore the pointer by hand"
            " (its body is the version id)"
        )
    if head.top is None:
        return (
            f"{key} is missing and no record says which version was published (uploaded:"
            f" {undecided}); refusing to publish a snapshot holding only this batch. Restore the"
            " pointer by hand (its body is the version id)"
        )
    text = (
        f"{key} is missing but published versions exist (newest published: {head.top});"
        " refusing to publish a snapshot holding only this batch. Restore the pointer (its"
        f" body is the version id: {head.top}), or set {REBUILD_ENV}=1 to build on {head.top}"
    )
    if head.undecided:
        text += (
            f". Not chosen: {undecided}, uploaded on top of it without a record of a publish"
            " (a merge that died before or right after its pointer swap; its retry applies its"
            " batch again)"
        )
    return text


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
