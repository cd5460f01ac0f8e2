"""Finishing batch ``b`` deletes only ``b``'s intermediates (issue 10, case 6), on both paths.

Batch ids that share ``b``'s prefix — ``b-group-7`` (a name that looks like one of ``b``'s
groups) and ``b/x`` (a name under ``b``'s directory) — keep theirs, and their own final merges
then succeed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snapmerge import synth
from snapmerge.domain import FinalMergeRequest, Keys, Record
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, PATHS, Rig, make_rig, rows


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def grouped(rig: Rig, batch_id: str, chunk: list[Record]) -> FinalMergeRequest:
    """A grouped batch: chunk intermediates, then one group output that the final merge reads."""
    chunks = rig.batch(batch_id, [chunk])
    group = Keys.group_prefix(batch_id, 0)
    for key in rig.blobs.list(chunks.intermediate_keys[0]):
        rel = key[len(chunks.intermediate_keys[0]) :]
        body = rig.blobs.get(key)
        assert body is not None
        rig.blobs.put(group + rel, body.body)
    return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=(group,))


@pytest.mark.parametrize("path", PATHS)
def test_finishing_b_keeps_the_intermediates_of_b_group_7_and_b_slash_x(
    rig: Rig, path: str
) -> None:
    base = rows(1, 10)
    rig.seed(base)
    b_rows, g_rows, x_rows = rows(2, 3, start=100), rows(3, 3, start=200), rows(4, 3, start=300)
    b = grouped(rig, "b", b_rows)
    g = rig.batch("b-group-7", [g_rows])
    x = rig.batch("b/x", [x_rows])
    theirs = {k for req in (g, x) for p in req.intermediate_keys for k in rig.blobs.list(p)}

    rig.merger(path).run(b)

    assert rig.blobs.list("intermediate/b/chunk-") == []
    assert rig.blobs.list("intermediate/b-group-0/") == []
    assert {k for k in rig.blobs.list("intermediate/") if k in theirs} == theirs
    rig.merger(path).run(g)
    rig.merger(path).run(x)
    assert rig.snapshot() == synth.expected_state([base, b_rows, g_rows, x_rows])
