"""Runs the real state machine definition on moto's ASL engine, with Lambda served in-process.

``infra/statemachine/compaction.asl.json`` (with the template's DefinitionSubstitutions filled in)
is executed by moto's Step Functions interpreter — the ASL grammar and evaluator behind its
``execute_state_machine`` option, which handles every construct the definition uses (Map with
ItemSelector/ItemProcessor, intrinsic functions, Retry with jitter, Catch, Choice, Fail paths).
Each Task's Lambda invoke calls ``handlers.compaction.lambda_handler`` here and answers as the
Python Lambda runtime does: an unhandled exception becomes ``FunctionError`` with ``errorType`` =
the exception's class name, which is what the definition's Retry and Catch match on.

Retry backoff is recorded instead of slept (the definition's intervals are 5-120 s).
"""

from __future__ import annotations

import json
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from handlers.compaction import lambda_handler

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "infra" / "statemachine" / "compaction.asl.json"
TEMPLATE = ROOT / "infra" / "template.yaml"
ACCOUNT, REGION = "123456789012", "us-east-1"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:snapmerge-compaction"
SUBSTITUTIONS = {"CompactionFunctionArn": FUNCTION_ARN}


def definition(edit: Callable[[dict[str, Any]], None] | None = None) -> str:
    """The ASL text with every ``${...}`` substitution filled, as CloudFormation would."""
    text = ASL.read_text()
    names = set(re.findall(r"\$\{(\w+)\}", text))
    assert names == set(SUBSTITUTIONS), f"substitutions changed: {sorted(names)}"
    template = TEMPLATE.read_text()
    assert all(f"{n}:" in template for n in names), "the template no longer substitutes them"
    for name, value in SUBSTITUTIONS.items():
        text = text.replace("${" + name + "}", value)
    if edit is None:
        return text
    machine = json.loads(text)
    edit(machine)
    return json.dumps(machine)


# ---------------------------------------------------------------------------- Lambda stand-in
@dataclass(frozen=True)
class Invocation:
    event: dict[str, Any]
    response: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class FakeContext:
    """The parts of a Lambda context the handler reads (a 900 s function timeout)."""

    deadline: float = field(default_factory=lambda: time.monotonic() + 900)
    aws_request_id: str = "req-sfn-test"
    function_name: str = "snapmerge-compaction"

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


class InProcessLambda:
    """Replaces moto's Lambda Invoke: runs the handler here and answers like the Python runtime."""

    def __init__(self) -> None:
        self.calls: list[Invocation] = []
        self.functions: set[str] = set()
        self._guard = threading.Lock()

    def __call__(self, parameters: dict[str, Any], region: str, state_credentials: Any) -> Any:
        event = json.loads(parameters["Payload"])
        try:
            # Through JSON, as Lambda marshals it: a non-serialisable answer fails here too.
            result = json.loads(json.dumps(lambda_handler(event, FakeContext())))
        except Exception as exc:
            body = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            self._record(parameters, Invocation(event, None, type(exc).__name__))
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": body}
        self._record(parameters, Invocation(event, result, None))
        return {"StatusCode": 200, "Payload": result, "ExecutedVersion": "$LATEST"}

    def _record(self, parameters: dict[str, Any], call: Invocation) -> None:
        with self._guard:
            self.functions.add(str(parameters["FunctionName"]))
            self.calls.append(call)

    def ops(self, operation: str) -> list[Invocation]:
        return [c for c in self.calls if c.event.get("operation") == operation]


# ---------------------------------------------------------------------------- the engine
@dataclass(frozen=True)
class Outcome:
    status: str
    output: dict[str, Any] | None
    error: str | None
    events: list[dict[str, Any]]

    def entered(self) -> list[str]:
        return [e["stateEnteredEventDetails"]["name"] for e in self.events if _has(e, "Entered")]

    def task_errors(self) -> list[str]:
        return [e["taskFailedEventDetails"]["error"] for e in self.events if _has(e, "TaskFailed")]


def _has(event: dict[str, Any], kind: str) -> bool:
    """Whether a history event's type (an enum in moto's engine) ends with ``kind``."""
    return str(getattr(event["type"], "value", event["type"])).endswith(kind)


class StepFunctions:
    """moto's ASL interpreter with Lambda patched to :class:`InProcessLambda`, backoff recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, lam: InProcessLambda) -> None:
        monkeypatch.setattr(lambda_eval_utils, "_invoke_lambda_function", lam)
        monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=self._backoff))
        self.backend = StepFunctionsParserBackend(REGION, ACCOUNT)
        self.backoffs: list[float] = []
        self.on_backoff: Callable[[], None] = lambda: None
        self._machines = 0

    def _backoff(self, seconds: float) -> None:
        self.backoffs.append(seconds)
        self.on_backoff()

    def run(self, text: str, execution_input: dict[str, Any], name: str) -> Outcome:
        self._machines += 1
        machine = self.backend.create_state_machine(
            name=f"compaction-{self._machines}",
            definition=text,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/snapmerge-sfn",
        )
        execution = self.backend.start_execution(
            machine.arn, name=name, execution_input=json.dumps(execution_input)
        )
        guard = time.monotonic() + 180  # a hung engine fails the test instead of hanging CI
        while execution.status == "RUNNING" and time.monotonic() < guard:
            time.sleep(0.05)
        output = execution.output
        events = self.backend.get_execution_history(execution.execution_arn)["events"]
        return Outcome(
            status=str(execution.status),
            output=json.loads(output) if isinstance(output, str) else output,
            error=execution.error,
            events=[dict(e) for e in events],
        )
