"""Run one workflow execution on this machine, step by step, through the real Lambda handler.

Mirrors ``infra/statemachine/compaction.asl.json``: split → Map(process_chunk) →
[Map(merge_chunk_group) when there are more than 4 chunks] → final_merge. Used by the demo, the
functional tests and the benchmarks; a failing step raises, as it fails the real execution.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from handlers.compaction import lambda_handler

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def _default_invoke(event: dict[str, Any]) -> dict[str, Any]:
    return lambda_handler(event, None)


def run_execution(
    event: dict[str, Any],
    *,
    invoke: Invoke = _default_invoke,
    parallel: int = 4,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """Run split → chunks → groups → final merge for one batch; return every step's output."""
    execution_id = execution_id or f"local-{uuid.uuid4().hex[:12]}"
    split = invoke({**event, "operation": "split_into_chunks", "execution_id": execution_id})
    carry = {"routing": split.get("routing"), "execution_id": execution_id}
    if split.get("fast_path"):
        results = list(split["chunk_results"])
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            results = list(
                pool.map(
                    lambda c: invoke({**c, **carry, "operation": "process_chunk"}),
                    split["chunks"],
                )
            )
        if split.get("use_groups"):
            base = {
                "batch_id": split["batch_id"],
                "database": split["database"],
                "group_size": split["group_size"],
                "chunk_results": results,
                **carry,
                "operation": "merge_chunk_group",
            }
            with ThreadPoolExecutor(max_workers=parallel) as pool:
                results = list(
                    pool.map(lambda g: invoke({**base, "group_index": g}), split["groups"])
                )
    final = invoke(
        {
            "operation": "final_merge",
            "batch_id": split["batch_id"],
            "database": split["database"],
            "chunk_results": results,
            "poll_results_s3_key": split.get("poll_results_s3_key"),
            "poll_results_s3_bucket": split.get("poll_results_s3_bucket"),
            "planned_chunk_count": split.get("planned_chunk_count"),
            **carry,
        }
    )
    return {"execution_id": execution_id, "split": split, "chunk_results": results, "final": final}
