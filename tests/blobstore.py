"""A blob store for tests: moto's S3 server on 127.0.0.1, and a folder that is local or a bucket.

The pipeline reaches it as a pod on a cluster reaches its blob store: through Flyte's storage
settings (``FLYTE_AWS_ENDPOINT`` and keys), with real S3 requests.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import flyte.storage
import obstore
import pytest
import requests

from pipelines.archive import object_store


@contextmanager
def s3_server() -> Iterator[str]:
    """An S3-protocol server on 127.0.0.1 for as long as the block lasts; yields its URL."""
    # Imported here: moto takes 1.5 s to import, and most test runs never start the server.
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket's URI, with Flyte's S3 settings pointing at ``endpoint``."""
    monkeypatch.setenv("FLYTE_AWS_ENDPOINT", endpoint)
    monkeypatch.setenv("FLYTE_AWS_ACCESS_KEY_ID", "quakecat")
    monkeypatch.setenv("FLYTE_AWS_SECRET_ACCESS_KEY", "quakecat")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    name = f"quakecat-{uuid.uuid4().hex[:12]}"
    requests.put(f"{endpoint}/{name}", timeout=10).raise_for_status()
    return f"s3://{name}"


class Folder:
    """Where files are kept: ``root`` is a local folder or an ``s3://`` bucket; ``scratch`` is a
    local folder for copies to open."""

    def __init__(self, root: str, scratch: Path):
        self.root, self.scratch = root, scratch

    @property
    def remote(self) -> bool:
        return flyte.storage.is_remote(self.root)

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> list[str]:
        if self.remote:
            store, _ = object_store(self.uri(""))
            return sorted(meta["path"] for batch in obstore.list(store) for meta in batch)
        return sorted(p.name for p in Path(self.root).iterdir())

    def read(self, name: str) -> bytes:
        if self.remote:
            return obstore.get(*object_store(self.uri(name))).bytes().to_bytes()
        return (Path(self.root) / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        """``data`` in place of ``name``, whole, as another run would put it there."""
        if self.remote:
            obstore.put(*object_store(self.uri(name)), data)
            return
        partial = Path(self.root) / f".{name}.partial"
        partial.write_bytes(data)
        partial.replace(Path(self.root) / name)

    def copy(self, name: str) -> Path:
        """The file as a local copy, to open."""
        path = self.scratch / f"{uuid.uuid4().hex}-{name}"
        path.write_bytes(self.read(name))
        return path
