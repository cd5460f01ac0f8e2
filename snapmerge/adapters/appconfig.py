"""The latest content of an AppConfig configuration profile, through Powertools' provider.

Powertools' ``AppConfigProvider`` keeps the session token and the last content (AppConfig answers
an unchanged poll with an empty body). Its cache is not used (``max_age=0``): the caller decides
how often to poll, within the session's minimum poll interval.

Errors: anything the SDK or the provider raises (throttled, a poll inside the minimum interval,
no such application, environment or profile, access denied) is
:class:`~snapmerge.errors.StoreError` with the AWS code when one is known.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parameters import AppConfigProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from snapmerge import aws
from snapmerge.adapters.aws_errors import SDK_ERRORS, translate
from snapmerge.errors import StoreError


class AppConfigProfile:
    def __init__(
        self, application: str, environment: str, profile: str, client: Any | None = None
    ) -> None:
        self.where = f"{application}/{environment}/{profile}"
        self.profile = profile
        self._provider = AppConfigProvider(
            environment=environment,
            application=application,
            boto3_client=client if client is not None else aws.client("appconfigdata"),
        )

    def __repr__(self) -> str:
        return f"AppConfigProfile({self.where!r})"

    def latest(self) -> bytes:
        """The profile's content (the last one AppConfig sent when it answers "unchanged")."""
        try:
            raw = self._provider.get(self.profile, max_age=0)
        except GetParameterError as exc:  # the provider wraps whatever the SDK raised
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, SDK_ERRORS):
                raise translate(cause, f"GetLatestConfiguration {self.where}") from exc
            raise StoreError(f"GetLatestConfiguration {self.where} failed: {exc}") from exc
        except SDK_ERRORS as exc:
            raise translate(exc, f"GetLatestConfiguration {self.where}") from exc
        return raw if isinstance(raw, bytes) else str(raw).encode()
