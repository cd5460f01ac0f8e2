"""SSM Parameter Store: read a parameter (optionally decrypted), put one.

Errors: a parameter that does not exist is ``None`` from :meth:`SsmParameters.get`; a create
(``overwrite=False``) of a parameter that exists is :class:`~snapmerge.errors.ConditionFailedError`;
anything else the SDK raises (throttled past its retries, access denied, a KMS key we may not use)
is :class:`~snapmerge.errors.StoreError` with the AWS code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapmerge import aws
from snapmerge.adapters.aws_errors import SDK_ERRORS, error_code, translate
from snapmerge.errors import ConditionFailedError


@dataclass(frozen=True, repr=False)
class Parameter:
    name: str
    value: str
    version: int

    def __repr__(self) -> str:  # a SecureString's value is a secret: never print it
        return f"Parameter({self.name!r}, version={self.version})"


class SsmParameters:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client if client is not None else aws.client("ssm")

    def get(self, name: str, *, decrypt: bool = False) -> Parameter | None:
        kwargs: dict[str, Any] = {"Name": name}
        if decrypt:
            kwargs["WithDecryption"] = True
        try:
            found = self._client.get_parameter(**kwargs)["Parameter"]
        except SDK_ERRORS as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise translate(exc, f"GetParameter {name!r}") from exc
        return Parameter(name, str(found["Value"]), int(found["Version"]))

    def put(self, name: str, value: str, *, overwrite: bool, kind: str = "String") -> int:
        """Write ``value``; return the version the write produced (versions rise by one a write).

        ``overwrite=False`` creates: it is refused if the parameter exists (SSM does that check
        atomically); ``overwrite=True`` writes unconditionally.
        """
        try:
            reply = self._client.put_parameter(
                Name=name, Value=value, Type=kind, Overwrite=overwrite
            )
        except SDK_ERRORS as exc:
            if error_code(exc) == "ParameterAlreadyExists":
                raise ConditionFailedError(f"ssm parameter {name!r}", "does not exist") from exc
            raise translate(exc, f"PutParameter {name!r}") from exc
        return int(reply["Version"])
