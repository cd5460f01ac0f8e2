"""The compaction Lambda: one entry point dispatching on ``operation`` (DESIGN §1).

Thin on purpose: parse, delegate to the core, shape the response. Every failure raises, so Step
Functions sees it (the original returned ``{"statusCode": 500}`` bodies it took for success).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handlers import bootstrap
from snapmerge import workflow
from snapmerge.errors import InvalidEventError

Handler = Callable[[bootstrap.App, dict[str, Any], Any], dict[str, Any]]


def _split(app: bootstrap.App, event: dict[str, Any], context: Any) -> dict[str, Any]:
    return workflow.split_into_chunks(app.workflow, event)


def _with_workdir(
    step: Callable[[workflow.WorkflowContext, dict[str, Any], Any], dict[str, Any]],
) -> Handler:
    def run(app: bootstrap.App, event: dict[str, Any], context: Any) -> dict[str, Any]:
        app.workflow.workdir.mkdir(parents=True, exist_ok=True)
        work = tempfile.mkdtemp(prefix="step-", dir=app.workflow.workdir)
        try:
            return step(app.workflow, event, Path(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return run


def _final_merge(app: bootstrap.App, event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = workflow.parse_final_merge(event)
    result = app.legacy.run(request)
    return {
        "batch_id": result.batch_id,
        "database": result.database.value,
        "snapshot_key": result.snapshot_key,
        "version": result.version,
        "total_embeddings": result.total_embeddings,
        "processing_time_seconds": result.processing_time_seconds,
        "merge_path": result.path.value,
        "replayed": result.replayed,
        "poll_results_s3_key": event.get("poll_results_s3_key"),
        "poll_results_s3_bucket": event.get("poll_results_s3_bucket"),
    }


OPERATIONS: dict[str, Handler] = {
    "split_into_chunks": _split,
    "process_chunk": _with_workdir(workflow.process_chunk),
    "merge_chunk_group": _with_workdir(workflow.merge_chunk_group),
    "final_merge": _final_merge,
}


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise InvalidEventError(f"event must be an object, got {type(event).__name__}")
    operation = event.get("operation")
    handler = OPERATIONS.get(str(operation))
    if handler is None:
        raise InvalidEventError(
            f"unknown operation {operation!r}: expected one of {sorted(OPERATIONS)}"
        )
    return handler(bootstrap.app(), event, context)
