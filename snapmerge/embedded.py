"""Embedded AWS: moto's server in-process on 127.0.0.1, with request handling serialised.

moto checks S3 ``If-Match``/``If-None-Match`` and DynamoDB ``ConditionExpression`` but does not
apply check-and-write atomically, so two concurrent conditional writes can both succeed — a lost
update real S3 and DynamoDB never allow. :class:`EmbeddedAWS` wraps moto's WSGI application in one
lock, so each request is evaluated and applied alone, as the real services behave. Request bodies
are read *before* the lock is taken, so large uploads still stream in parallel.

Every client in snapmerge is built from the standard environment; :meth:`EmbeddedAWS.env` gives
the variables that point it here (``AWS_ENDPOINT_URL``, ``AWS_REGION``, dummy credentials, and
the original pipeline's ``CHROMADB_BUCKET`` / ``DYNAMODB_TABLE_NAME``).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any

from snapmerge import aws

DEFAULT_BUCKET = "snapmerge-local"
DEFAULT_TABLE = "snapmerge-locks"
DEFAULT_REGION = "us-east-1"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialised(app: WSGIApp, rtt: float = 0.0) -> WSGIApp:
    """Wrap a WSGI app so that requests are handled one at a time (bodies read outside the lock).

    ``rtt`` seconds are slept per request before the lock, outside it: a network round trip, as
    every request to real S3 or DynamoDB pays and as concurrent requests overlap (a benchmark's
    model; 0, the default, for everything else).
    """
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH") or ""
        if stream is not None:
            if length.isdigit():
                body = stream.read(int(length)) if int(length) else b""
            elif environ.get("wsgi.input_terminated"):
                body = stream.read()
            else:
                body = b""
            environ["wsgi.input"] = io.BytesIO(body)
        if rtt > 0:
            time.sleep(rtt)
        with lock:
            response = app(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()

    return handle


class EmbeddedAWS:
    """moto's server on a free loopback port; a context manager.

    >>> with EmbeddedAWS() as cloud, cloud.environment():
    ...     ...  # boto3 clients made here talk to the embedded server
    """

    def __init__(
        self,
        bucket: str = DEFAULT_BUCKET,
        table: str = DEFAULT_TABLE,
        *,
        region: str = DEFAULT_REGION,
        port: int = 0,
        serialise: bool = True,
        rtt_ms: float = 0.0,
    ) -> None:
        self.bucket = bucket
        self.table = table
        self.region = region
        self._port = port
        self._serialise = serialise
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0 (got {rtt_ms})")
        self._rtt = rtt_ms / 1000.0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> EmbeddedAWS:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        app: WSGIApp = DomainDispatcherApplication(create_backend_app)
        if self._serialise:
            app = serialised(app, self._rtt)
        self._server = make_server(
            "127.0.0.1", self._port, app, threaded=True, request_handler=QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-aws", daemon=True
        )
        self._thread.start()
        with self.environment():
            self.create_bucket(self.bucket)
            self.create_table(self.table)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EmbeddedAWS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need ---------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded AWS is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "snapmerge",
            "AWS_SECRET_ACCESS_KEY": "snapmerge",
            "CHROMADB_BUCKET": self.bucket,
            "S3_BUCKET": self.bucket,
            "DYNAMODB_TABLE_NAME": self.table,
            "ANONYMIZED_TELEMETRY": "False",
        }

    @contextmanager
    def environment(self) -> Iterator[dict[str, str]]:
        """Point the process environment at this server for the duration of the block."""
        values = self.env()
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield values
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old

    # -- resources -----------------------------------------------------------------------------
    def create_bucket(self, name: str) -> None:
        s3 = aws.client("s3")
        with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=name)

    def create_table(self, name: str) -> None:
        """The original lock table: ``PK``/``SK`` strings, GSI1 on ``GSI1PK``/``GSI1SK``."""
        ddb = aws.client("dynamodb")
        with suppress(ddb.exceptions.ResourceInUseException):
            ddb.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": n, "AttributeType": "S"}
                    for n in ("PK", "SK", "GSI1PK", "GSI1SK")
                ],
                KeySchema=[
                    {"AttributeName": "PK", "KeyType": "HASH"},
                    {"AttributeName": "SK", "KeyType": "RANGE"},
                ],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": "GSI1",
                        "KeySchema": [
                            {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                            {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            )


def serve_forever(
    bucket: str = DEFAULT_BUCKET, table: str = DEFAULT_TABLE, port: int = 4566
) -> None:
    """``snapmerge serve``: run an embedded server in the foreground until interrupted."""
    with EmbeddedAWS(bucket, table, port=port) as cloud:
        print("embedded AWS (moto, serialised) listening; export these to use it:", flush=True)
        for key, value in cloud.env().items():
            print(f"export {key}={value}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)
