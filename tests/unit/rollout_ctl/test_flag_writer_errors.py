"""What counts as a flag-store failure for :func:`rollout.flag_writer.set_flags`: the project's
errors, which the adapters produce from every AWS failure. A bug elsewhere is not read as "the
store refused" (the old bare ``except Exception`` did that, and withdrew the transition)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from flags.store_aws import S3Store
from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.flag_writer import FlagWriteRefusedError, RolloutFlagState, set_flags
from snapmerge import aws as aws_clients
from tests.conftest import AwsEnv
from tests.unit.rollout_ctl.helpers import default_doc


class BuggyWriter:
    """A FlagWriter with a programming error in ``read`` or ``write``."""

    def __init__(self, where: str) -> None:
        self.where, self.reads = where, 0

    def read(self) -> tuple[RolloutFlagState, str]:
        self.reads += 1
        if self.where == "read":
            raise KeyError("final-merge-path")
        return RolloutFlagState(0.0, False), "v1"

    def write(self, state: RolloutFlagState, expected_version: str) -> str:
        raise TypeError("write() got an unexpected keyword argument")


@pytest.mark.parametrize(("where", "bug"), [("read", KeyError), ("write", TypeError)])
def test_a_bug_propagates_instead_of_reading_as_a_store_failure(
    where: str, bug: type[Exception]
) -> None:
    writer = BuggyWriter(where)
    with pytest.raises(bug):
        set_flags(writer, 5.0, None, "stage 1")
    assert writer.reads == 1  # no read-back: the bug was not taken for an ambiguous write


class ThrottledPuts:
    """The embedded S3 client, except that PutObject is answered as S3 does under load."""

    def __init__(self) -> None:
        self.inner, self.refused = aws_clients.client("s3"), 0

    def put_object(self, **kwargs: Any) -> Any:
        self.refused += 1
        error = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
        raise ClientError(error, "PutObject")  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_throttled_s3_flag_write_is_read_back_and_refused(aws: AwsEnv) -> None:
    S3Store(aws.bucket, "flags/doc.json").save(default_doc(), None)
    client = ThrottledPuts()
    writer = DocumentFlagWriter(S3Store(aws.bucket, "flags/doc.json", client))
    with pytest.raises(FlagWriteRefusedError, match="SlowDown"):
        set_flags(writer, 5.0, None, "stage 1")
    assert client.refused == 1  # the fault fired
    doc, _ = S3Store(aws.bucket, "flags/doc.json").load()
    assert rollout_state_of(doc).percent == 0.0  # nothing landed
