"""Write a small ``words`` snapshot with the running chromadb, as a tarball fixture.

Run once per chromadb line (``python tests/compat/make_fixture.py``); the output is committed:

    .venv-chroma1021/bin/python tests/compat/make_fixture.py   # chromadb-1.0.21-words.tar.gz
    .venv/bin/python tests/compat/make_fixture.py              # chromadb-1.5.9-words.tar.gz

The snapshot is written with chromadb's own API (not snapmerge's adapter), the way the original
pipeline's writer builds one: a PersistentClient directory with one collection, vectors passed
explicitly. Its records are :func:`fixture_records` (1536-d, as in the pipeline), so a test can
compare what it reads with what was written without storing them twice.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snapmerge.domain import Record

FIXTURES = Path(__file__).parent / "fixtures"
COLLECTION = "words"
SEED, COUNT, DIMENSION = 1021, 12, 1536


def fixture_records() -> list[Record]:
    from snapmerge import synth

    return list(synth.records(SEED, COUNT, DIMENSION, id_prefix="fx"))


def fixture_path(version: str) -> Path:
    return FIXTURES / f"chromadb-{version}-words.tar.gz"


def main() -> int:
    import chromadb
    import numpy as np

    from snapmerge import synth

    rows = synth.records(SEED, COUNT, DIMENSION, id_prefix="fx")
    out = fixture_path(chromadb.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        client = chromadb.PersistentClient(path=tmp)
        col = client.create_collection(COLLECTION, embedding_function=None)
        col.add(
            ids=[r.id for r in rows],
            embeddings=np.asarray([r.embedding for r in rows], dtype=np.float32),
            documents=[r.document for r in rows],
            metadatas=[r.metadata for r in rows],  # type: ignore[misc]
        )
        if hasattr(client, "close"):  # chromadb >= 1.1
            client.close()
        else:  # 1.0.x: stop the path's shared system, which writes and releases its files
            client._system.stop()
        FIXTURES.mkdir(exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            tar.add(tmp, arcname=".")
    print(out, out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
