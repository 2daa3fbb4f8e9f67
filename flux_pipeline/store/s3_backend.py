"""S3 (and any other fsspec filesystem) as a :class:`~flux_pipeline.store.backend.StorageBackend`.

An S3 ``PUT`` (or a multipart upload) only becomes visible once complete, so a write is one
``pipe_file``. Exclusive create is one ``PUT`` with ``If-None-Match: *``, compare-and-swap one
``PUT`` with ``If-Match: <ETag>``, a tagged read one ``GetObject``. Every call s3fs makes to the
S3 API is counted by verb, where it makes it (its ``_call_s3``).

Another fsspec filesystem (:class:`FsspecBackend`) writes, copies and hashes through fsspec and
has neither exclusive create, tagged read nor compare-and-swap; its requests are not counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from fsspec.asyn import sync

from flux_pipeline.store.backend import (
    HASH_CHUNK,
    PAGE_NAMES,
    RequestCounter,
    Tagged,
    fs_sha256,
    pages_of,
)

#: The verb counted for each S3 API call s3fs makes (others count under their own name).
_S3_VERBS = {
    "put_object": "PUT",
    "create_multipart_upload": "PUT",
    "upload_part": "PUT",
    "complete_multipart_upload": "PUT",
    "get_object": "GET",
    "head_object": "HEAD",
    "list_objects_v2": "LIST",
    "list_objects": "LIST",
    "copy_object": "COPY",
    "upload_part_copy": "COPY",
    "delete_object": "DELETE",
    "delete_objects": "DELETE",
}


class FsspecBackend:
    """Objects under ``root`` of a remote fsspec filesystem without conditional writes."""

    one_get: Mapping[str, Any] = MappingProxyType({"max_concurrency": 1})

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.requests = RequestCounter()

    def count(self, verb: str, n: int = 1) -> None:
        """Remote requests are counted where they are made, if at all."""

    def uri(self, path: str) -> str:
        uri: str = self.fs.unstrip_protocol(path)
        return uri

    def strip(self, uri: str) -> str:
        path: str = self.fs._strip_protocol(uri)
        return path

    def write(self, path: str, data: bytes) -> str | None:
        answer = self.fs.pipe_file(path, data)
        etag = answer.get("ETag") if isinstance(answer, dict) else None
        return str(etag).strip('"') if etag else None

    def create(self, path: str, data: bytes) -> bool:
        self._unsupported("an exclusive create")

    def append(self, path: str, line: bytes) -> bool:
        """An object is replaced whole, never appended to."""
        return False

    def read_tagged(self, path: str) -> Tagged | None:
        self._unsupported("a tagged read")

    def replace_if(self, path: str, data: bytes, tag: str) -> bool:
        self._unsupported("a conditional replace")

    def copy(self, src: str, dest: str) -> None:
        self.fs.cp_file(src, dest)  # one CopyObject on S3, no listing of the source first

    def sha256(self, path: str) -> str:
        return fs_sha256(self.fs, path)

    def clean_staging(self, older_than: float) -> int:
        """Nothing is staged: a remote write is visible only once complete."""
        return 0

    def _unsupported(self, what: str) -> NoReturn:
        raise NotImplementedError(f"{what} needs a local folder or S3, not {self.uri(self.root)}")

    def name_pages(self, folder: str) -> Iterator[list[str]]:
        """One ``ls`` of the folder, handed out page by page (not counted)."""
        try:
            listed = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            listed = []
        yield from pages_of(
            sorted(str(i["name"]).rsplit("/", 1)[-1] for i in listed if i["type"] == "file")
        )


class S3Backend(FsspecBackend):
    """Objects under ``bucket/prefix`` of an s3fs filesystem (this store's own instance)."""

    def __init__(self, fs: Any, root: str) -> None:
        super().__init__(fs, root)
        call = fs._call_s3

        async def counted(method: str, *args: Any, **kwargs: Any) -> Any:
            self.requests.add(_S3_VERBS.get(method, method))
            return await call(method, *args, **kwargs)

        fs._call_s3 = counted  # the one door every S3 API call of s3fs passes through

    def create(self, path: str, data: bytes) -> bool:
        """A ``PUT`` whose answer was lost and that is retried reports False although it created
        the object: callers that must know compare the content (claims do)."""
        try:
            self.fs.pipe_file(path, data, mode="create")
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            raise  # 409 ConditionalRequestConflict (concurrent creates) is retried
        return True

    def read_tagged(self, path: str) -> Tagged | None:
        try:
            tagged: Tagged = sync(self.fs.loop, _get, self.fs, path)
        except FileNotFoundError:
            return None
        return tagged

    def replace_if(self, path: str, data: bytes, tag: str) -> bool:
        try:
            self.fs.pipe_file(path, data, IfMatch=tag)
        except FileNotFoundError:
            return False
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def sha256(self, path: str) -> str:
        """One streamed ``GetObject`` (``fs.open`` would ask for the size first)."""
        hexdigest: str = sync(self.fs.loop, _sha256, self.fs, path)
        return hexdigest

    def name_pages(self, folder: str) -> Iterator[list[str]]:
        """One ``ListObjectsV2`` per page, asked for only when the caller wants the next one."""
        bucket, key, _ = self.fs.split_path(folder)
        prefix = f"{key.rstrip('/')}/" if key else ""
        token: str | None = None
        while True:
            names, token = sync(self.fs.loop, _list_page, self.fs, bucket, prefix, token)
            yield names
            if token is None:
                return


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an S3 error is a ``412 Precondition Failed`` (s3fs maps only some of them)."""
    if isinstance(exc, FileExistsError):
        return True
    response: dict[str, Any] = getattr(exc.__cause__, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(status == 412 or response.get("Error", {}).get("Code") == "PreconditionFailed")


async def _list_page(
    fs: Any, bucket: str, prefix: str, token: str | None
) -> tuple[list[str], str | None]:
    """One page of object names directly under ``prefix`` (sorted, as S3 lists them) and the
    token of the next page (None: this was the last)."""
    more = {"ContinuationToken": token} if token else {}
    response = await fs._call_s3(
        "list_objects_v2",
        Bucket=bucket,
        Prefix=prefix,
        Delimiter="/",
        MaxKeys=PAGE_NAMES,
        **more,
    )
    names = [str(o["Key"])[len(prefix) :] for o in response.get("Contents", [])]
    return names, response.get("NextContinuationToken") if response.get("IsTruncated") else None


async def _get(fs: Any, path: str) -> Tagged:
    """One ``GetObject``: the body, ETag and ``LastModified`` of the very version it returned
    (s3fs has no public call that returns them together)."""
    bucket, key, _ = fs.split_path(path)
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    try:
        body: bytes = await response["Body"].read()
    finally:
        response["Body"].close()
    return Tagged(body, str(response["ETag"]), response["LastModified"])


async def _sha256(fs: Any, path: str) -> str:
    """The sha256 of one object, from one streamed ``GetObject``."""
    bucket, key, _ = fs.split_path(path)
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    try:
        while chunk := await response["Body"].read(HASH_CHUNK):
            digest.update(chunk)
    finally:
        response["Body"].close()
    return digest.hexdigest()
