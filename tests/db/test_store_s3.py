"""The content store on S3: a real S3 API (moto's server, on loopback) behind the same semantics as the folder.

``moto_s3``, ``make_bucket`` and ``s3_options`` are also used by tests/browser/test_replicas.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import pickle
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from sqlalchemy import select

from db.models import Item
from db.store import ContentStore, FsspecContentStore, open_store
from medlabel.benchmarks.deid_corpus import study_pair
from medlabel.errors import ConfigError, NotFoundError
from medlabel.settings import Settings
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.images import display_image
from services.ingest import ingest_uploads
from tests.services.factories import make_project

CREDENTIALS = {"key": "medlabel-test", "secret": "medlabel-test-secret"}
REGION = "us-east-1"
MIB = 2**20


@contextmanager
def moto_s3() -> Iterator[str]:
    """An S3-compatible server on a free loopback port (moto, in a thread); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["key"],
                        aws_secret_access_key=CREDENTIALS["secret"], region_name=REGION)


def make_bucket(endpoint: str, *, versioned: bool = False) -> str:
    name = f"medlabel-{uuid.uuid4().hex[:12]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def s3_options(endpoint: str) -> dict[str, Any]:
    """``MEDLABEL_STORE_OPTIONS`` for the server: endpoint and credentials (s3fs keyword arguments)."""
    return {"endpoint_url": endpoint, **CREDENTIALS, "client_kwargs": {"region_name": REGION}}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str) -> str:
    return make_bucket(endpoint)


@pytest.fixture
def store(endpoint: str, bucket: str) -> FsspecContentStore:
    made = open_store(f"s3://{bucket}/images", s3_options(endpoint), Path("/nonexistent"))
    assert isinstance(made, FsspecContentStore)
    return made


def _keys(endpoint: str, bucket: str) -> list[str]:
    listing = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


def _fail_on(store: FsspecContentStore, monkeypatch: pytest.MonkeyPatch, method: str, after: int = 0) -> None:
    """Make the ``after``-th and later S3 calls of ``method`` fail (a dropped connection mid-upload)."""
    fs = store._fs
    real_call = fs._call_s3
    seen = {"n": 0}

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == method:
            seen["n"] += 1
            if seen["n"] > after:
                raise ConnectionResetError(f"injected failure in {name}")
        return await real_call(name, *args, **kwargs)

    monkeypatch.setattr(fs, "_call_s3", call)


def test_round_trip_derived_and_delete(store: FsspecContentStore, endpoint: str, bucket: str) -> None:
    digest, rel = store.put(b"dicom bytes", ".dcm")
    assert digest == hashlib.sha256(b"dicom bytes").hexdigest()
    assert rel == f"{digest[:2]}/{digest[2:4]}/{digest}.dcm"  # the same key as on a local folder
    assert store.exists(rel) and store.get(rel) == b"dicom bytes"
    store.put_derived(digest, "display/0/None/1024", b"png")
    assert store.get_derived(digest, "display/0/None/1024") == b"png"
    assert store.get_derived(digest, "other") is None
    assert _keys(endpoint, bucket) == [f"images/{rel}", f"images/{store.derived_key(digest, 'display/0/None/1024')}"]
    store.delete(rel)
    assert not store.exists(rel)
    assert store.get_derived(digest, "display/0/None/1024") is None
    assert _keys(endpoint, bucket) == []
    with pytest.raises(NotFoundError, match="not in the content store"):
        store.get(rel)


def test_identical_bytes_are_uploaded_once(endpoint: str) -> None:
    bucket = make_bucket(endpoint, versioned=True)  # a second upload would show as a second version
    store = FsspecContentStore(f"s3://{bucket}", s3_options(endpoint))
    first = store.put(b"pixels", ".png")
    fresh = FsspecContentStore(f"s3://{bucket}", s3_options(endpoint))  # no shared cache
    assert fresh.put(b"pixels", ".png") == first
    versions = s3_client(endpoint).list_object_versions(Bucket=bucket)["Versions"]
    assert [(v["Key"], v["IsLatest"]) for v in versions] == [(first[1], True)]


def test_failed_put_leaves_no_object(store: FsspecContentStore, endpoint: str, bucket: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on(store, monkeypatch, "put_object")
    with pytest.raises(ConnectionResetError, match="injected"):
        store.put(b"half", ".dcm")
    assert _keys(endpoint, bucket) == []
    monkeypatch.undo()
    digest, rel = store.put(b"half", ".dcm")  # a retry publishes it whole
    assert store.get(rel) == b"half" and _keys(endpoint, bucket) == [f"images/{rel}"]


def test_multipart_upload_failing_midway_leaves_no_object_and_no_pending_upload(
        endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FsspecContentStore(f"s3://{bucket}/big", s3_options(endpoint), part_size=5 * MIB)
    data = bytes(range(256)) * (12 * MIB // 256)  # 12 MiB: three parts of at most 5 MiB
    digest = hashlib.sha256(data).hexdigest()
    _fail_on(store, monkeypatch, "upload_part", after=1)  # the first part arrives, the second fails
    with pytest.raises(ConnectionResetError, match="injected"):
        store.put(data, ".dcm")
    client = s3_client(endpoint)
    assert _keys(endpoint, bucket) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, not left behind
    monkeypatch.undo()
    _, rel = store.put(data, ".dcm")
    head = client.head_object(Bucket=bucket, Key=f"big/{rel}")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-3")  # really multipart
    assert hashlib.sha256(FsspecContentStore(f"s3://{bucket}/big", s3_options(endpoint)).get(rel)).hexdigest() == digest


def test_missing_keys_and_bad_keys(store: FsspecContentStore) -> None:
    missing = store.key_for("a" * 64, ".png")
    with pytest.raises(NotFoundError, match=f"s3://.*/images/{missing}: not in the content store"):
        store.get(missing)
    assert not store.exists(missing)
    store.delete(missing)  # deleting what is not there is not an error
    with pytest.raises(ValueError, match="escapes"):
        store.get("../../other-bucket/x")
    with pytest.raises(ValueError, match="sha256"):
        store.get_derived("not-a-digest", "x")


def test_unwritable_store_is_a_config_error(endpoint: str) -> None:
    store = FsspecContentStore("s3://no-such-bucket-here/images", s3_options(endpoint))
    with pytest.raises(ConfigError, match="s3://no-such-bucket-here/images: content store is not writable"):
        store.put(b"pixels", ".png")
    with pytest.raises(ConfigError, match="not writable"):
        store.put_derived("a" * 64, "display", b"png")


def test_open_store_picks_the_backend(tmp_path: Path, endpoint: str) -> None:
    default = open_store(None, {}, tmp_path / "store")
    assert isinstance(default, ContentStore) and default.root == tmp_path / "store"
    folder = open_store(str(tmp_path / "elsewhere"), {}, tmp_path / "store")
    assert isinstance(folder, ContentStore) and folder.root == tmp_path / "elsewhere"
    file_url = open_store(f"file://{tmp_path}/third", {}, tmp_path / "store")
    assert isinstance(file_url, ContentStore) and file_url.root == tmp_path / "third"
    assert isinstance(open_store("s3://any-bucket/p", s3_options(endpoint), tmp_path), FsspecContentStore)
    with pytest.raises(ConfigError, match="nosuchproto://x"):
        open_store("nosuchproto://x", {}, tmp_path)


def test_reads_are_cached_per_process(store: FsspecContentStore, endpoint: str, bucket: str) -> None:
    _, rel = store.put(b"immutable", ".png")
    assert store.get(rel) == b"immutable"
    s3_client(endpoint).delete_object(Bucket=bucket, Key=f"images/{rel}")  # behind the store's back
    assert store.get(rel) == b"immutable"  # served from this process's cache
    uncached = FsspecContentStore(store.url, store.options, cache_bytes=0)
    with pytest.raises(NotFoundError):
        uncached.get(rel)


def test_store_pickles_as_its_configuration(store: FsspecContentStore) -> None:
    _, rel = store.put(b"for a dask worker", ".npy")
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.url, clone.options) == (store.url, store.options)
    assert clone.get(rel) == b"for a dask worker"


def test_filesystems_without_atomic_puts_write_a_temporary_key_then_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    store = FsspecContentStore(f"memory://medlabel-{uuid.uuid4().hex}")
    store._atomic_put = False  # as on SFTP or HDFS, where a half-written file is visible
    fs = store._fs

    def broken_mv(*args: Any, **kwargs: Any) -> None:
        raise OSError("connection lost")

    monkeypatch.setattr(fs, "mv", broken_mv)
    with pytest.raises(OSError, match="connection lost"):
        store.put(b"half", ".png")
    assert fs.find(store.url) == []  # neither the final key nor the temporary one
    monkeypatch.undo()
    _, rel = store.put(b"whole", ".png")
    assert store.get(rel) == b"whole"
    assert fs.find(store.url) == [f"{store._path(rel)}"]


def _png(i: int) -> bytes:
    img = Image.new("L", (80, 64), color=30 + 10 * i)
    ImageDraw.Draw(img).rectangle((10 + i, 10, 40 + i, 50), fill=220)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_ingest_and_display_with_an_s3_store(settings: Settings, endpoint: str, bucket: str) -> None:
    s3_settings = dataclasses.replace(settings, store_url=f"s3://{bucket}/medlabel", store_options=s3_options(endpoint))
    ctx = AppContext.from_settings(s3_settings)
    try:
        assert isinstance(ctx.store, FsspecContentStore)
        pid = make_project(ctx)
        dicom, _ = study_pair()
        report = ingest_uploads(ctx, pid, [("a.png", _png(1)), ("b.png", _png(2)), ("ct.dcm", dicom.data)], actor=LOCAL_ADMIN)
        assert report.count("released") + report.count("quarantined") == 3, report
        with ctx.reads() as session:
            items = session.scalars(select(Item).order_by(Item.id)).all()
        keys = _keys(endpoint, bucket)
        assert {f"medlabel/{i.stored_path}" for i in items} == set(keys)  # every blob went to the bucket
        for item in items:
            shown = display_image(ctx, item.id, actor=LOCAL_ADMIN)
            with Image.open(io.BytesIO(shown.png)) as img:
                assert img.format == "PNG" and img.size == (shown.width, shown.height)
            assert shown.original_width == item.width
        derived = [k for k in _keys(endpoint, bucket) if k.startswith("medlabel/derived/")]
        assert len(derived) == 3  # one display rendition per item, stored beside the blobs
        again = ingest_uploads(ctx, pid, [("a-again.png", _png(1))], actor=LOCAL_ADMIN)
        assert again.count("duplicate") == 1 and len(_keys(endpoint, bucket)) == 6
        assert not (settings.data_dir / "store").exists()  # nothing fell back to the local folder
    finally:
        ctx.close()
