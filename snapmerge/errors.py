"""One exception tree for everything snapmerge raises.

Adapters translate their library's exceptions into these (botocore's ``ClientError`` with
``ConditionalCheckFailedException`` becomes :class:`LockBusyError`, an S3 412 becomes
:class:`PointerConflictError`, a Chroma ``InternalError`` on a corrupt database becomes
:class:`MergeInputError`) so callers never catch a library type.

``SnapmergeError``
  ├── ``InvalidEventError``      an event or option that cannot be acted on (missing field,
  │                              unknown operation)
  ├── ``MergeInputError``        an input that cannot be merged (not a Chroma dir, corrupt,
  │     │                        bad tarball, wrong dimension, missing intermediate, an input
  │     │                        of another collection)
  │     └── ``SnapshotFormatError`` a base's or input's on-disk (chromadb) format cannot be told,
  │                              or the merge would publish a format its readers cannot open
  ├── ``SnapshotError``          the pointer names a missing or incomplete version, is missing
  │     │                        beside complete versions, or holds no version id
  │     └── ``VersionTakenError`` a new version id is already claimed (the upload picks another)
  ├── ``LockError``              the lock table failed (throttled past retries, no table, no access)
  │     ├── ``LockBusyError``    somebody else holds the lease (the only "try later" answer)
  │     └── ``LeaseLostError``   our lease expired or was taken; we must not publish
  ├── ``PointerConflictError``   the conditional pointer write lost (someone published first);
  │                              any conditional S3 object write (If-Match / If-None-Match)
  ├── ``ConditionFailedError``   another conditional AWS write was refused: a DynamoDB
  │                              ``ConditionExpression`` failed, an SSM parameter to create exists
  ├── ``StoreError``             an AWS store (S3, DynamoDB, SSM, CloudWatch, CloudWatch Logs,
  │     │                        AppConfig) failed for another reason: throttled past the SDK's
  │     │                        retries, access denied, a connection error; ``code`` holds the
  │     │                        AWS error code (or the botocore exception's name) when known
  │     └── ``MissingResourceError`` the named log group, table, object or parameter does not
  │                              exist (callers decide whether that is empty or an error)
  └── ``FlagDocumentConflictError`` a conditional save of a flag document lost (it changed)

Adapters in :mod:`snapmerge.adapters` take an injected client and are the only code that sees
botocore's ``ClientError`` / ``BotoCoreError``; an exception that is not the SDK's (a bug in an
injected fake, say) passes through them unchanged.
"""

from __future__ import annotations


class SnapmergeError(Exception):
    """Base of every error snapmerge raises on purpose."""


class InvalidEventError(SnapmergeError, ValueError):
    """An event, option or configuration value that cannot be acted on."""


class MergeInputError(SnapmergeError):
    """An input to a merge is unusable; nothing was published and nothing deleted."""


class SnapshotFormatError(MergeInputError):
    """A format cannot be told, or merging would change the base's without the operator's consent
    (readers on an older chromadb line could no longer open it). Nothing was uploaded."""


class SnapshotError(SnapmergeError):
    """The pointer names a version that is missing or incomplete."""


class VersionTakenError(SnapshotError):
    """The commit log already holds an entry for a version id we meant to create."""


class LockError(SnapmergeError):
    """The lock table failed for a reason other than contention."""


class LockBusyError(LockError):
    """The lease is held by another owner."""

    def __init__(self, lock_id: str, holder: str | None = None, expires: str | None = None):
        self.lock_id = lock_id
        self.holder = holder
        self.expires = expires
        super().__init__(f"lock {lock_id!r} is held by {holder or 'another owner'} until {expires}")


class LeaseLostError(LockError):
    """Our lease expired or was taken over: the holder must stop before publishing."""


class PointerConflictError(SnapmergeError):
    """The conditional pointer write was refused: the pointer moved since we read it."""

    def __init__(self, key: str, expected: str | None, current: str | None = None):
        self.key = key
        self.expected = expected
        self.current = current
        super().__init__(
            f"pointer {key!r} moved: expected ETag {expected}, now names {current or 'unknown'}"
        )


class ConditionFailedError(SnapmergeError):
    """A conditional AWS write other than an S3 object's was refused (a DynamoDB condition, an
    SSM create of a parameter that exists). Nothing was written."""

    def __init__(self, where: str, condition: str) -> None:
        self.where = where
        self.condition = condition
        super().__init__(f"{where}: condition {condition!r} refused")

    def __reduce__(self) -> tuple[type[ConditionFailedError], tuple[str, str]]:
        return type(self), (self.where, self.condition)  # survives a process boundary intact


class StoreError(SnapmergeError):
    """An AWS store failed (not a precondition failure); ``code`` is the AWS error code if known."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class MissingResourceError(StoreError):
    """The log group, table, object or parameter named does not exist."""


class FlagDocumentConflictError(SnapmergeError):
    """A conditional save of a flag document was refused: the stored version is not the expected.

    The rollout controller re-reads the document, re-applies its change and saves again.
    """

    def __init__(self, where: str, expected: str | None, current: str | None = None):
        self.where = where
        self.expected = expected
        self.current = current
        found = current or "unknown"
        super().__init__(
            f"flag document {where} changed: expected version {expected}, found {found}"
        )
