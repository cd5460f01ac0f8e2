"""The deployable stack, checked offline (issue 6, item 2): cfn-lint plus the properties we rely on.

cfn-lint ships its resource specs and the Step Functions schema inside the package, so it runs
with no network (asserted: sockets refuse to connect while it lints). The SAM template names its
state machine by ``DefinitionUri``, which cfn-lint does not open, so the ASL is linted a second
time inlined into a plain ``AWS::StepFunctions::StateMachine``. cfn-lint's ASL schema is partial,
hence the graph checks below (targets exist, catches end in Fail, which errors are retried).

Every structural checker returns a list of problems and is shown to catch a planted violation.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint import api as cfnlint_api
from cfnlint.decode import decode

from rollout.metric_names import DEFAULT_NAMESPACE, MetricName

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "template.yaml"
ASL = INFRA / "statemachine" / "compaction.asl.json"

REQUIRED_ENV = {
    "DYNAMODB_TABLE_NAME": None,
    "CHROMADB_BUCKET": None,
    "S3_BUCKET": None,
    "LOCK_DURATION_MINUTES": "16",
    "HEARTBEAT_INTERVAL_SECONDS": "60",
    "MAX_HEARTBEAT_FAILURES": "3",
    "CHUNK_SIZE_WORDS": None,
    "CHUNK_SIZE_LINES": None,
    "CHROMA_ROOT": "/tmp/chroma",
    "POWERTOOLS_METRICS_NAMESPACE": None,
    "POWERTOOLS_SERVICE_NAME": None,
    "SNAPMERGE_FLAGS_APPCONFIG": None,
    "ANONYMIZED_TELEMETRY": "False",
}
# The only Allow statements that may name a bare "*" resource: X-Ray has no resource-level
# permissions (documented in the template and docs/deploy.md).
STAR_RESOURCE_SIDS = {"XRayTraces"}
NEVER_RETRIED = {"MergeInputError", "InvalidEventError", "PointerConflictError"}
CATCH_ALL = {"States.ALL", "States.TaskFailed"}
FAKE_FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:compaction"
OPERATIONS = {"split_into_chunks", "process_chunk", "merge_chunk_group", "final_merge"}


# ------------------------------------------------------------------ loading and linting
def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, errors = decode(str(TEMPLATE))
    assert not errors and decoded is not None, errors
    return dict(_plain(decoded))


@pytest.fixture(scope="module")
def asl() -> dict[str, Any]:
    return dict(json.loads(ASL.read_text()))


def _resources(tpl: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in tpl["Resources"].items() if v["Type"] == kind}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _lint(text: str) -> list[str]:
    config = cfnlint_api.ManualArgs(regions=["us-east-1"])
    matches = cfnlint_api.lint(text, config=config)
    return [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]


def _errors(findings: list[str]) -> list[str]:
    return [f for f in findings if f.startswith("E")]


def _asl_host_template(definition: dict[str, Any]) -> str:
    return json.dumps(
        {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "Machine": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {
                        "RoleArn": "arn:aws:iam::123456789012:role/compaction",
                        "DefinitionSubstitutions": {"CompactionFunctionArn": FAKE_FUNCTION_ARN},
                        "Definition": definition,
                    },
                }
            },
        }
    )


def test_cfn_lint_reports_nothing_on_the_template_offline(no_network: None) -> None:
    # No warnings either: none is accepted, so none needs documenting.
    assert _lint(TEMPLATE.read_text()) == []


def test_cfn_lint_reports_nothing_on_the_state_machine_offline(
    no_network: None, asl: dict[str, Any]
) -> None:
    assert _lint(_asl_host_template(asl)) == []


def test_cfn_lint_catches_planted_errors(no_network: None, asl: dict[str, Any]) -> None:
    broken = TEMPLATE.read_text().replace("FlagsProfile.ConfigurationProfileId", "FlagsProfile.X")
    assert _errors(_lint(broken)), "cfn-lint missed a GetAtt to an attribute that does not exist"
    bad_asl = copy.deepcopy(asl)
    bad_asl["States"]["FinalMerge"]["Type"] = "Tsak"
    assert _errors(_lint(_asl_host_template(bad_asl))), "cfn-lint missed an unknown state type"


# ------------------------------------------------------------------ state machine checks
def _parse_asl(definition: dict[str, Any]) -> None:
    """moto's Step Functions parser: the full ASL grammar, intrinsics and paths included."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    text = json.dumps(definition).replace("${CompactionFunctionArn}", FAKE_FUNCTION_ARN)
    AmazonStateLanguageParser.parse(text)


def test_state_machine_parses_with_the_full_asl_grammar(asl: dict[str, Any]) -> None:
    _parse_asl(asl)


def _choice_without_path(machine: dict[str, Any]) -> None:
    machine["States"]["NeedGroups"]["Choices"][0]["Variable"] = "use_groups"


def _misspelt_intrinsic(machine: dict[str, Any]) -> None:
    task = machine["States"]["ProcessChunks"]["ItemProcessor"]["States"]["ProcessChunk"]
    task["Parameters"]["Payload.$"] = "States.JsonMerg($.chunk, $.step, false)"


@pytest.mark.parametrize("plant", [_choice_without_path, _misspelt_intrinsic])
def test_the_grammar_check_catches_planted_errors(asl: dict[str, Any], plant: Any) -> None:
    broken = copy.deepcopy(asl)
    plant(broken)
    with pytest.raises(Exception):  # noqa: B017 - the parser raises several unrelated types
        _parse_asl(broken)


def _scopes(states: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The top-level States and every Map/Parallel's nested States (each its own namespace)."""
    yield states
    for state in states.values():
        for sub in [state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])]:
            if sub:
                yield from _scopes(sub["States"])


def _all_states(machine: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for scope in _scopes(machine["States"]):
        yield from scope.items()


def asl_problems(machine: dict[str, Any]) -> list[str]:
    problems = []
    for scope in _scopes(machine["States"]):
        for name, state in scope.items():
            targets = [state.get("Next"), state.get("Default")]
            targets += [c["Next"] for c in state.get("Choices", [])]
            for target in filter(None, targets):
                if target not in scope:
                    problems.append(f"{name}: Next {target!r} does not exist")
            for catch in state.get("Catch", []):
                caught = scope.get(catch["Next"], {}).get("Type")
                if caught != "Fail":
                    problems.append(f"{name}: Catch {catch['ErrorEquals']} leads to {caught}")
            for retry in state.get("Retry", []):
                errors = set(retry["ErrorEquals"])
                if errors & (NEVER_RETRIED | CATCH_ALL):
                    problems.append(
                        f"{name}: retries {sorted(errors & (NEVER_RETRIED | CATCH_ALL))}"
                    )
                if not 0 < retry.get("MaxAttempts", 3) <= 10:
                    problems.append(f"{name}: unbounded retry {retry}")
    final_retries = machine["States"]["FinalMerge"].get("Retry", [])
    busy = [r for r in final_retries if "LockBusyError" in r["ErrorEquals"]]
    if not busy or busy[0].get("BackoffRate", 1) <= 1:
        problems.append("FinalMerge: no LockBusyError retry with backoff")
    return problems


def test_state_machine_graph_and_retries(asl: dict[str, Any]) -> None:
    assert asl_problems(asl) == []


def test_state_machine_checker_catches_planted_violations(asl: dict[str, Any]) -> None:
    catch_to_success = copy.deepcopy(asl)
    catch_to_success["States"]["Done"] = {"Type": "Succeed"}
    catch_to_success["States"]["FinalMerge"]["Catch"][-1]["Next"] = "Done"
    retries_bad_input = copy.deepcopy(asl)
    retries_bad_input["States"]["FinalMerge"]["Retry"][0]["ErrorEquals"].append("MergeInputError")
    no_busy_retry = copy.deepcopy(asl)
    no_busy_retry["States"]["FinalMerge"]["Retry"].pop(0)
    for broken in (catch_to_success, retries_bad_input, no_busy_retry):
        assert asl_problems(broken), "the checker accepted a violation"


def test_success_is_reached_only_through_final_merge(asl: dict[str, Any]) -> None:
    top = asl["States"]
    ends = [n for n, s in top.items() if s.get("End") or s["Type"] == "Succeed"]
    assert ends == ["MarkBatchesComplete"]
    into_end = [n for n, s in top.items() if s.get("Next") == "MarkBatchesComplete"]
    assert into_end == ["FinalMerge"]
    assert not any(s["Type"] == "Succeed" for _, s in _all_states(asl))
    selector = top["FinalMerge"]["ResultSelector"]
    assert {"snapshot_key.$", "total_embeddings.$", "processing_time_seconds.$"} <= set(selector)


def test_every_operation_is_invoked_and_the_routing_reaches_final_merge(
    asl: dict[str, Any],
) -> None:
    text = json.dumps(asl)
    assert set(re.findall(r'"operation": "(\w+)"', text)) == OPERATIONS
    assert asl["States"]["FinalMerge"]["Parameters"]["Payload"]["routing.$"] == "$.routing"
    groups = next(c for c in asl["States"]["NeedGroups"]["Choices"])
    assert groups == {"Variable": "$.use_groups", "BooleanEquals": True, "Next": "MergeChunkGroups"}
    for _, state in _all_states(asl):
        if state["Type"] == "Task":
            assert state["Parameters"]["FunctionName"] == "${CompactionFunctionArn}"
            assert state["TimeoutSeconds"] > 900  # the Lambda's own timeout fires first


# ------------------------------------------------------------------ template checks
def _policy_statements(tpl: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, role in _resources(tpl, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement


def iam_problems(tpl: dict[str, Any]) -> list[str]:
    problems = []
    for role, statement in _policy_statements(tpl):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        if any(a == "*" or a.endswith(":*") for a in actions):
            problems.append(f"{role}/{statement.get('Sid')}: wildcard action {actions}")
        if "*" in resources and statement.get("Sid") not in STAR_RESOURCE_SIDS:
            problems.append(f"{role}/{statement.get('Sid')}: resource '*'")
    for name, fn in _resources(tpl, "AWS::Serverless::Function").items():
        if "Role" not in fn["Properties"] or "Policies" in fn["Properties"]:
            problems.append(f"{name}: SAM would attach managed policies with '*' resources")
    return problems


def pointer_policy_problems(tpl: dict[str, Any]) -> list[str]:
    (policy,) = _resources(tpl, "AWS::S3::BucketPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    pointer = [
        s
        for s in statements
        if s["Effect"] == "Deny"
        and "s3:PutObject" in json.dumps(s["Action"])
        and "/*/snapshot/latest-pointer.txt" in json.dumps(s["Resource"])
    ]
    if len(pointer) != 1:
        return [f"expected one Deny of PutObject on the pointer key, found {len(pointer)}"]
    null = pointer[0].get("Condition", {}).get("Null", {})
    if null != {"s3:if-match": "true", "s3:if-none-match": "true"}:
        return [f"the pointer Deny must apply exactly when both headers are absent: {null}"]
    tls = [
        s for s in statements if s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
    ]
    return [] if tls and tls[0]["Effect"] == "Deny" else ["no TLS-only Deny"]


def test_iam_is_least_privilege(template: dict[str, Any]) -> None:
    assert iam_problems(template) == []
    xray = [s for _, s in _policy_statements(template) if s.get("Sid") in STAR_RESOURCE_SIDS]
    assert xray and all(str(a).startswith("xray:") for s in xray for a in s["Action"])


def test_bucket_policy_refuses_unconditional_pointer_writes(template: dict[str, Any]) -> None:
    assert pointer_policy_problems(template) == []


def test_policy_checkers_catch_planted_violations(template: dict[str, Any]) -> None:
    star = copy.deepcopy(template)
    role = star["Resources"]["CompactionFunctionRole"]["Properties"]["Policies"][0]
    role["PolicyDocument"]["Statement"].append({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert len(iam_problems(star)) == 2
    one_header = copy.deepcopy(template)
    statements = one_header["Resources"]["SnapshotBucketPolicy"]["Properties"]["PolicyDocument"]
    statements["Statement"][0]["Condition"]["Null"].pop("s3:if-none-match")
    assert pointer_policy_problems(one_header)


def test_lambda_is_an_image_with_the_full_environment(template: dict[str, Any]) -> None:
    (fn,) = _resources(template, "AWS::Serverless::Function").values()
    props = fn["Properties"]
    assert props["PackageType"] == "Image" and props["Timeout"] == 900
    assert props["ImageConfig"]["Command"] == ["handlers.compaction.lambda_handler"]
    assert fn["Metadata"]["DockerContext"] == ".."
    assert (INFRA.parent / fn["Metadata"]["Dockerfile"]).is_file()
    env = props["Environment"]["Variables"]
    assert set(REQUIRED_ENV) <= set(env), set(REQUIRED_ENV) - set(env)
    for name, value in REQUIRED_ENV.items():
        if value is not None:
            assert env[name] == value, name
    namespace = template["Parameters"]["MetricsNamespace"]["Default"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert namespace == DEFAULT_NAMESPACE == "ChromaCompaction"
    assert env["SNAPMERGE_FLAGS_APPCONFIG"]["Fn::Sub"].count("/") == 2


def test_lock_table_keeps_the_original_schema_and_can_be_reused(template: dict[str, Any]) -> None:
    table = template["Resources"]["LockTable"]
    assert table["Condition"] == "CreateLockTable"
    assert template["Conditions"]["CreateLockTable"] == {
        "Fn::Equals": [{"Ref": "ExistingLockTableName"}, ""]
    }
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "GSI1"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["GSI1PK", "GSI1SK"]
    assert {a["AttributeType"] for a in props["AttributeDefinitions"]} == {"S"}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "time_to_live", "Enabled": True}


def test_bucket_versioned_with_scratch_lifecycle(template: dict[str, Any]) -> None:
    props = template["Resources"]["SnapshotBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    prefixes = {r.get("Prefix") for r in props["LifecycleConfiguration"]["Rules"]}
    assert {"words/delta/", "lines/delta/", "intermediate/"} <= prefixes
    assert not any("snapshot" in str(p) for p in prefixes)


def test_guardrail_alarms_are_the_appconfig_rollback_monitors(template: dict[str, Any]) -> None:
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    text = json.dumps(alarms)
    for name in ("MergeErrors", "FallbackToLegacy", "CASFailures"):
        assert f'"MetricName": "{name}"' in text
    hold = [a["Properties"] for a in alarms.values() if a["Properties"].get("MetricName")]
    assert {d["Value"] for a in hold for d in a["Dimensions"]} == {"two_phase", "words", "lines"}
    assert all(a["ExtendedStatistic"] == "p95" and a["MetricName"] == "LockHoldTime" for a in hold)
    assert '"Value": "legacy"' not in text
    (environment,) = _resources(template, "AWS::AppConfig::Environment").values()
    monitored = {m["AlarmArn"]["Fn::GetAtt"][0] for m in environment["Properties"]["Monitors"]}
    guardrails = set(alarms) - {"LostPublishesAlarm"}  # not a rollout guardrail (runbook)
    assert monitored == guardrails
    role = template["Resources"]["AppConfigMonitorRole"]["Properties"]
    allowed = role["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"]
    assert {r["Fn::GetAtt"][0] for r in allowed} == guardrails


def test_lost_publishes_alarm_sums_every_path_and_collection(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["LostPublishesAlarm"]["Properties"]
    (query,) = alarm["Metrics"]
    expression = query["Expression"]["Fn::Sub"]
    assert "SUM(LostPublishes)" in expression and "Collection, MergePath" in expression
    assert MetricName("LostPublishes").unit.value == "Count"
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_metric_names_in_alarms_and_dashboard_are_emitted_names(template: dict[str, Any]) -> None:
    body = template["Resources"]["CompactionDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "X", body))
    used = {m[1] for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])}
    used |= set(re.findall(r'"MetricName": "(\w+)"', json.dumps(template["Resources"])))
    emitted = {m.value for m in MetricName}
    assert used - emitted == set()
    for name in ("LockHoldTime", "LockWaitTime", "CASFailures", "ChunkCount", "FinalMergeDuration"):
        assert name in used


def test_appconfig_defaults_match_the_packaged_flag_document(template: dict[str, Any]) -> None:
    (profile,) = _resources(template, "AWS::AppConfig::ConfigurationProfile").values()
    assert profile["Properties"]["Type"] == "AWS.Freeform"
    (version,) = _resources(template, "AWS::AppConfig::HostedConfigurationVersion").values()
    hosted = json.loads(version["Properties"]["Content"])
    packaged = json.loads((ROOT / "flags" / "default_flags.json").read_text())
    assert hosted["final-merge-path"]["default"] == "legacy"
    assert hosted["final-merge-kill-switch"]["default"] is False
    assert {k: packaged[k] for k in hosted} == hosted


def test_dockerfile_builds_the_project_for_the_lambda_runtime() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:3\.12$", text, re.M)
    assert "ANONYMIZED_TELEMETRY=False" in text
    assert 'pip install --target "${LAMBDA_TASK_ROOT}" .' in text
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and not any("[" in line for line in installs), "the image takes no extra"
    assert text.rstrip().endswith('CMD ["handlers.compaction.lambda_handler"]')
    for package in ("snapmerge", "legacy", "flags", "rollout", "handlers"):
        assert f"COPY {package} ./{package}" in text


# ------------------------------------------------------------------ beside the original system
def _references(node: Any, under_if: str | None = None) -> Iterator[tuple[str, str | None]]:
    """Every resource a node refers to (Ref, GetAtt, ${X} in Sub), with the If it sits under."""
    if isinstance(node, dict):
        if "Fn::If" in node:
            condition, *branches = node["Fn::If"]
            for branch in branches:
                yield from _references(branch, condition)
            return
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value, under_if
            elif key == "Fn::GetAtt":
                yield (value[0] if isinstance(value, list) else value.split(".")[0]), under_if
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                for name in re.findall(r"\$\{([A-Za-z0-9]+)[.}]", text):
                    yield name, under_if
                if isinstance(value, list):
                    yield from _references(value[1], under_if)
            else:
                yield from _references(value, under_if)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item, under_if)


def reuse_problems(tpl: dict[str, Any]) -> list[str]:
    """A conditional resource may only be named under an If on its own condition."""
    problems = []
    for resource, condition in (
        ("SnapshotBucket", "CreateSnapshotBucket"),
        ("LockTable", "CreateLockTable"),
    ):
        if tpl["Resources"][resource].get("Condition") != condition:
            problems.append(f"{resource} is created even when an existing one is given")
        for section in ("Resources", "Outputs"):
            for name, node in tpl[section].items():
                if tpl[section][name].get("Condition") == condition:
                    continue
                for ref, under in _references(node):
                    if ref == resource and under != condition:
                        problems.append(f"{section}.{name} names {resource} unconditionally")
    return problems


def test_the_stack_can_take_the_original_bucket_and_lock_table(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["ExistingSnapshotBucketName"]["Default"] == ""
    assert params["ExistingLockTableName"]["Default"] == ""
    assert template["Conditions"]["CreateSnapshotBucket"] == {
        "Fn::Equals": [{"Ref": "ExistingSnapshotBucketName"}, ""]
    }
    assert reuse_problems(template) == []
    env = template["Resources"]["CompactionFunction"]["Properties"]["Environment"]["Variables"]
    for name in ("CHROMADB_BUCKET", "S3_BUCKET"):
        assert env[name] == {
            "Fn::If": [
                "CreateSnapshotBucket",
                {"Ref": "SnapshotBucket"},
                {"Ref": "ExistingSnapshotBucketName"},
            ]
        }


def test_the_reuse_checker_catches_an_unconditional_reference(template: dict[str, Any]) -> None:
    planted = copy.deepcopy(template)
    env = planted["Resources"]["CompactionFunction"]["Properties"]["Environment"]["Variables"]
    env["CHROMADB_BUCKET"] = {"Ref": "SnapshotBucket"}
    assert reuse_problems(planted) == [
        "Resources.CompactionFunction names SnapshotBucket unconditionally"
    ]


def test_the_pointer_policy_can_wait_for_the_cut_over(template: dict[str, Any]) -> None:
    policy = template["Resources"]["SnapshotBucketPolicy"]
    assert policy["Condition"] == "ApplyPointerPolicy"
    assert template["Parameters"]["EnforceConditionalPointerWrites"]["AllowedValues"] == [
        "true",
        "false",
    ]
    assert template["Conditions"]["ApplyPointerPolicy"] == {
        "Fn::Equals": [{"Ref": "EnforceConditionalPointerWrites"}, "true"]
    }


_DDB_CALL = re.compile(r"self\._client\.(\w+)\(")
_TO_IAM = {
    "get_item": "GetItem",
    "update_item": "UpdateItem",
    "put_item": "PutItem",
    "delete_item": "DeleteItem",
    "query": "Query",
    "scan": "Scan",
    "batch_write_item": "BatchWriteItem",
    "batch_get_item": "BatchGetItem",
}


def lock_table_actions_called() -> set[str]:
    """The IAM actions the lock adapter needs, read from its source."""
    adapters = [ROOT / "snapmerge" / "adapters" / f"dynamodb_{m}.py" for m in ("lock", "expr")]
    source = "\n".join(path.read_text() for path in adapters)
    actions = set()
    for method in _DDB_CALL.findall(source):
        if method == "transact_write_items":
            kinds = set(re.findall(r'"(Put|Update|Delete|ConditionCheck)": \{', source))
            actions |= {
                "ConditionCheckItem" if k == "ConditionCheck" else f"{k}Item" for k in kinds
            }
        else:
            actions.add(_TO_IAM.get(method, method))
    return {f"dynamodb:{a}" for a in actions}


def test_the_role_has_exactly_the_lock_table_actions_the_code_calls(
    template: dict[str, Any],
) -> None:
    (statement,) = [s for _, s in _policy_statements(template) if s.get("Sid") == "LockTable"]
    assert (
        set(statement["Action"])
        == lock_table_actions_called()
        == {
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
        }
    )
    # No other module the Lambda runs talks to DynamoDB (embedded.py creates the local moto
    # table; rollout/dynamo.py is the rollout controller's state store, run by an operator with
    # the operator's credentials, never by the Lambda role, through adapters/dynamodb_items.py).
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if path.parts[len(ROOT.parts)] in {"tests", ".venv"} or rel in {
            "snapmerge/adapters/dynamodb_lock.py",
            "snapmerge/adapters/dynamodb_expr.py",
            "snapmerge/adapters/dynamodb_items.py",
            "snapmerge/embedded.py",
            "rollout/dynamo.py",
        }:
            continue
        assert 'client("dynamodb")' not in path.read_text(), path


def test_the_role_can_never_delete_the_pointer(template: dict[str, Any]) -> None:
    denies = [
        s
        for _, s in _policy_statements(template)
        if s["Effect"] == "Deny" and "s3:DeleteObject" in s["Action"]
    ]
    assert len(denies) == 1
    assert "/*/snapshot/latest-pointer.txt" in json.dumps(denies[0]["Resource"])


def test_the_phase_lease_parameter_cannot_go_below_what_start_up_accepts(
    template: dict[str, Any],
) -> None:
    from snapmerge.config import DEFAULT_VERIFY_MARGIN, LEASE_SLACK, Settings

    param = template["Parameters"]["PhaseLeaseSeconds"]
    env = template["Resources"]["CompactionFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SNAPMERGE_PHASE_LEASE_SECONDS"] == {"Ref": "PhaseLeaseSeconds"}
    assert float(env["SNAPMERGE_VERIFY_MARGIN_SECONDS"]) == DEFAULT_VERIFY_MARGIN.total_seconds()
    assert param["MinValue"] == (DEFAULT_VERIFY_MARGIN + LEASE_SLACK).total_seconds()
    base = {"CHROMADB_BUCKET": "b", "DYNAMODB_TABLE_NAME": "t"}
    for seconds in (param["MinValue"], param["Default"]):
        Settings.from_env({**base, "SNAPMERGE_PHASE_LEASE_SECONDS": str(seconds)})
