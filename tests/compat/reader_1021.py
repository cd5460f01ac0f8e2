"""Open the published snapshot the way the original pipeline's reader does, in its own process.

Run with the readers' interpreter (chromadb 1.0.21):

    python tests/compat/reader_1021.py BUCKET DATABASE OUT.json

Resolves ``{db}/snapshot/latest-pointer.txt`` (whitespace stripped), downloads every object under
``{db}/snapshot/timestamped/{version}/``, opens the directory with ``PersistentClient``, takes
the collection named after the database and writes every record to OUT.json. The endpoint comes
from the standard AWS environment. Any failure, including chromadb's ``PanicException`` (a
``BaseException``), is reported on stderr with exit status 3. Imports nothing from snapmerge.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path


def read(bucket: str, db: str) -> dict[str, object]:
    import boto3
    import chromadb

    s3 = boto3.client("s3")
    pointer = s3.get_object(Bucket=bucket, Key=f"{db}/snapshot/latest-pointer.txt")
    version = pointer["Body"].read().decode("utf-8").strip()
    prefix = f"{db}/snapshot/timestamped/{version}/"
    with tempfile.TemporaryDirectory() as local:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = Path(local) / item["Key"][len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))
        client = chromadb.PersistentClient(path=local)
        collection = client.get_collection(db)
        got = collection.get(include=["embeddings", "documents", "metadatas"])
        return {
            "chromadb": chromadb.__version__,
            "version": version,
            "count": collection.count(),
            "ids": list(got["ids"]),
            "embeddings": [[float(x) for x in row] for row in got["embeddings"]],
            "documents": list(got["documents"]),
            "metadatas": list(got["metadatas"]),
        }


def main(argv: list[str]) -> int:
    bucket, db, out = argv
    try:
        result = read(bucket, db)
    except BaseException as exc:  # PanicException is a BaseException
        traceback.print_exc()
        print(f"READER FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
