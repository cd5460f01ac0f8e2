"""The compaction Lambda: one entry point dispatching on ``operation`` (DESIGN §1).

Thin on purpose: parse, delegate, shape the response. Every failure raises, so Step Functions
sees it (the original returned ``{"statusCode": 500}`` bodies it took for success).

Routing: the split step evaluates ``final-merge-path`` once and pins the decision in the
execution's state (``routing``); ``final_merge`` reuses it unless the kill switch is on now. A
step whose event carries no pinned decision evaluates the flags itself. Metrics are flushed as EMF
once per invocation, failures included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from flags.decision import PathDecision, resolve_pinned
from handlers import bootstrap
from snapmerge import split, workflow
from snapmerge.domain import Database, FinalMergeRequest
from snapmerge.errors import InvalidEventError, MergeInputError
from snapmerge.scratch import owned_workdir

logger = Logger(service="snapmerge")
tracer = Tracer(service="snapmerge")

Handler = Callable[[bootstrap.App, dict[str, Any], Any], dict[str, Any]]


def _log_decision(decision: PathDecision, event: dict[str, Any], step: str) -> None:
    logger.info(
        "final-merge path decision",
        extra={
            "step": step,
            "batch_id": event.get("batch_id"),
            "execution_id": event.get("execution_id"),
            **{f"decision_{k}": v for k, v in decision.to_event().items()},
        },
    )


def _flag_errors(app: bootstrap.App, decision: PathDecision, event: dict[str, Any]) -> None:
    """Count the decision's flag error, once per execution: a pinned decision's error was
    counted by the step that pinned it (the split); only an error of this step is new."""
    pinned = event.get("routing")
    earlier = pinned.get("error") if isinstance(pinned, dict) else None
    if decision.error and decision.error != earlier:
        app.metrics.record_flag_error(
            "final-merge-path",
            decision.error,
            collection=str(event.get("database") or ""),
            execution_id=event.get("execution_id"),
        )


def _split(app: bootstrap.App, event: dict[str, Any], context: Any) -> dict[str, Any]:
    flags, settings = app.flags, app.settings
    defaults = split.default_chunk_size(settings)

    def chunk_size(db: Database | None) -> int:
        return flags.chunk_size(db, defaults(db)) if db is not None else defaults(None)

    out = split.split_into_chunks(
        app.workflow,
        event,
        chunk_size=chunk_size,
        group_size=flags.group_size(settings.group_size),
        fast_path=flags.single_chunk_fast_path(),
    )
    decision = flags.decide_path(
        targeting_key=str(event["batch_id"]),
        collection=str(event["database"]),
        batch_id=str(event["batch_id"]),
        execution_id=event.get("execution_id"),
    )
    _log_decision(decision, event, "split_into_chunks")
    try:  # the split's own record: left pending, it joined a later merge's in this process
        _flag_errors(app, decision, event)
    finally:
        app.metrics.flush()
    out["routing"] = decision.to_event()
    out["execution_id"] = event.get("execution_id")
    return out


def _with_workdir(
    step: Callable[[workflow.WorkflowContext, dict[str, Any], Path], dict[str, Any]],
) -> Handler:
    def run(app: bootstrap.App, event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Named after its owner, so a start-up sweep can tell a killed step's leftovers.
        with owned_workdir(app.workflow.workdir, "step") as work:
            return step(app.workflow, event, work)

    return run


@tracer.capture_method
def _final_merge(app: bootstrap.App, event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = workflow.parse_final_merge(event)
    decision = resolve_pinned(event, app.flags)
    _log_decision(decision, event, "final_merge")
    _flag_errors(app, decision, event)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    try:
        routed = app.router.run(
            request, decision.path, decision=decision.to_event(), remaining_ms=remaining
        )
    except MergeInputError as exc:
        raise _named_after_keys(exc, request, app.settings.chroma_root) from exc
    finally:
        app.metrics.flush()
    result = routed.result
    return {
        "batch_id": result.batch_id,
        "database": result.database.value,
        "snapshot_key": result.snapshot_key,
        "version": result.version,
        "total_embeddings": result.total_embeddings,
        "processing_time_seconds": result.processing_time_seconds,
        "merge_path": result.path.value,
        "decided_path": decision.path.value,
        "fallback_to_legacy": result.fallback_to_legacy,
        "shadow": routed.shadow.value if routed.shadow else None,
        "replayed": result.replayed,
        "poll_results_s3_key": event.get("poll_results_s3_key"),
        "poll_results_s3_bucket": event.get("poll_results_s3_bucket"),
    }


def _named_after_keys(
    exc: MergeInputError, request: FinalMergeRequest, root: Path
) -> MergeInputError:
    """The error with the final merge's scratch paths replaced by what they hold: the i-th
    fetched source (``…/src-000i``) by the i-th intermediate's S3 key, any other path under
    ``CHROMA_ROOT`` by a word for it. The operator reads where the bad input is on S3."""
    scratch = re.escape(str(root)) + r"/[^\s:'\"]*"

    def source(match: re.Match[str]) -> str:
        index = int(match["i"])
        keys = request.intermediate_keys
        return keys[index] if index < len(keys) else match[0]

    message = re.sub(scratch + r"/src-(?P<i>\d{4})(?:/[^\s:'\"]*)?", source, str(exc))
    message = re.sub(scratch, "(the merge's local scratch copy)", message)
    return MergeInputError(message)


def _operation(event: object) -> str | None:
    return str(event.get("operation")) if isinstance(event, dict) else None


OPERATIONS: dict[str, Handler] = {
    "split_into_chunks": _split,
    "process_chunk": _with_workdir(workflow.process_chunk),
    "merge_chunk_group": _with_workdir(workflow.merge_chunk_group),
    "final_merge": _final_merge,
}


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logger.append_keys(
        request_id=getattr(context, "aws_request_id", None), operation=_operation(event)
    )
    if not isinstance(event, dict):
        raise InvalidEventError(f"event must be an object, got {type(event).__name__}")
    operation = event.get("operation")
    handler = OPERATIONS.get(str(operation))
    if handler is None:
        raise InvalidEventError(
            f"unknown operation {operation!r}: expected one of {sorted(OPERATIONS)}"
        )
    return handler(bootstrap.app(), event, context)
