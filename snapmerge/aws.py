"""boto3 clients built only from the standard environment.

boto3 itself honours ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``), ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` and the credential chain, so the same code talks to AWS or to the embedded
moto server: there is no endpoint plumbing of our own. Only adapters and the embedded server call
this module.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_DEFAULT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
)


def client(service: str, config: Config | None = None) -> Any:
    """A client for ``service`` from the environment (region falls back to us-east-1)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    cfg = _DEFAULT_CONFIG.merge(config) if config else _DEFAULT_CONFIG
    return boto3.session.Session().client(service, region_name=region, config=cfg)  # type: ignore[call-overload]


def error_code(exc: ClientError) -> str:
    """The service's error code (``ConditionalCheckFailedException``, ``NoSuchKey``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))
