"""The SSM Parameter Store adapter on the embedded server, and each error it translates."""

from __future__ import annotations

import uuid

import pytest

from snapmerge.adapters.ssm_parameters import SsmParameters
from snapmerge.errors import ConditionFailedError, MissingResourceError, StoreError
from tests.conftest import AwsEnv
from tests.unit.adapters.faults import Unreachable, refusing


def _name() -> str:
    return f"/snapmerge/test-{uuid.uuid4().hex[:8]}"


def test_create_overwrite_and_read_back(aws: AwsEnv) -> None:
    params, name = SsmParameters(), _name()
    assert params.get(name) is None  # ParameterNotFound is an answer
    assert params.put(name, "one", overwrite=False) == 1
    with pytest.raises(ConditionFailedError):
        params.put(name, "two", overwrite=False)  # create, but it exists
    found = params.get(name)
    assert found is not None and (found.value, found.version) == ("one", 1)
    assert params.put(name, "three", overwrite=True) == 2
    again = params.get(name)
    assert again is not None and (again.value, again.version) == ("three", 2)


def test_a_secure_string_is_decrypted_and_never_printed(aws: AwsEnv) -> None:
    params, name = SsmParameters(), _name()
    params.put(name, "s3cret-value-1234", overwrite=False, kind="SecureString")
    found = params.get(name, decrypt=True)
    assert found is not None and found.value == "s3cret-value-1234"
    assert "s3cret" not in repr(found)


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        ("get_parameter", "ThrottlingException"),
        ("get_parameter", "AccessDeniedException"),
        ("put_parameter", "ThrottlingException"),
        ("put_parameter", "ParameterLimitExceeded"),
    ],
)
def test_refusals_are_store_errors(aws: AwsEnv, operation: str, code: str) -> None:
    with refusing("ssm", operation, code) as client:
        params = SsmParameters(client)
        with pytest.raises(StoreError) as info:
            if operation == "get_parameter":
                params.get("/x", decrypt=True)
            else:
                params.put("/x", "v", overwrite=True)
    assert info.value.code == code and not isinstance(info.value, MissingResourceError)


def test_no_connection_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        SsmParameters(Unreachable()).get("/x")
    assert info.value.code == "EndpointConnectionError"
