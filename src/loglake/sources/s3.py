"""S3 inputs: ``s3://bucket/prefix`` (every object below it), an exact object key, or a key glob.

Objects are read through :class:`pyarrow.fs.S3FileSystem` (pyarrow is already a dependency, so
no boto3 or s3fs at run time). Any S3-compatible store (MinIO, Ceph, moto...) works through
``[s3] endpoint_url``: with an endpoint override pyarrow uses path-style addressing
(``http://host:port/bucket/key``), which is what those stores expect. Empty ``[s3]`` values fall
back to the AWS SDK chain (environment, ``~/.aws``, instance metadata).

Every failure to reach, authenticate against or list the store is raised as :class:`SourceError`
naming the URI and the setting to fix; a listing that matches nothing is an error too, so a typo
never ingests silently nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from loglake.errors import SourceError
from loglake.sources.base import Input

if TYPE_CHECKING:
    from loglake.config import Config

# Each read on a pyarrow S3 stream is one ranged GET; reading through an 8 MiB buffer keeps the
# request count (and per-request latency) low without holding much memory per open input.
_READ_BUFFER_BYTES = 8 << 20

_GLOB_CHARS = re.compile(r"[*?\[]")

_ENDPOINT_HINT = (
    "set [s3] endpoint_url in loglake.toml or AWS_ENDPOINT_URL, and check the server is up"
)
_CREDENTIALS_HINT = (
    "set [s3] access_key_id and secret_access_key in loglake.toml, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (or a profile in ~/.aws/credentials), with read access to the bucket"
)


def parse_uri(spec: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty (whole bucket).

    Raises :class:`SourceError` when the spec is not an ``s3://`` URI or names no bucket.
    """
    if not spec.startswith("s3://"):
        raise SourceError(f"not an S3 URI: {spec!r}; write s3://BUCKET/PREFIX")
    bucket, _, key = spec[len("s3://") :].partition("/")
    if not bucket:
        raise SourceError(f"no bucket in {spec!r}; write s3://BUCKET/PREFIX")
    return bucket, key


def filesystem_options(config: Config) -> dict[str, Any]:
    """Keyword arguments of :class:`pyarrow.fs.S3FileSystem` for ``config.s3`` (plain values, so
    the query worker can build the same client in its own process). Raises :class:`SourceError`
    for an endpoint that is not http(s) or half-given credentials."""
    s3 = config.s3
    kwargs: dict[str, Any] = {
        # Listing and reading never need to create a bucket; refuse rather than create by accident.
        "allow_bucket_creation": False,
        "allow_bucket_deletion": False,
    }
    endpoint = s3.endpoint_url.strip().rstrip("/")
    if endpoint:
        # pyarrow wants "host:port" plus a separate scheme, not a URL.
        scheme, sep, rest = endpoint.partition("://")
        if sep:
            if scheme not in ("http", "https"):
                raise SourceError(
                    f"[s3] endpoint_url {s3.endpoint_url!r} must start with http:// or https://"
                )
            kwargs["scheme"] = scheme
            endpoint = rest
        kwargs["endpoint_override"] = endpoint
    if s3.region:
        kwargs["region"] = s3.region
    if bool(s3.access_key_id) != bool(s3.secret_access_key):
        raise SourceError(
            "[s3] access_key_id and secret_access_key must be set together (or both left empty "
            "to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)"
        )
    if s3.access_key_id:
        kwargs["access_key"] = s3.access_key_id
        kwargs["secret_key"] = s3.secret_access_key
    return kwargs


def _filesystem(config: Config) -> Any:
    """An S3FileSystem configured from ``config.s3``; unset values are left to the AWS SDK chain.

    Raises :class:`SourceError` for half-given credentials or options pyarrow rejects.
    """
    # Imported here: pyarrow.fs pulls in the AWS SDK, which `loglake --help` should not pay for.
    from pyarrow import fs as pafs

    kwargs = filesystem_options(config)
    try:
        # The constructor initialises pyarrow's S3 subsystem (initialize_s3) on first use.
        return pafs.S3FileSystem(**kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise SourceError(f"cannot set up the S3 client: {exc}; check the [s3] settings") from exc


def _translate_error(uri: str, exc: Exception, config: Config) -> SourceError:
    """Turn a pyarrow/AWS SDK error into a :class:`SourceError` that says what to fix."""
    text = str(exc)
    where = config.s3.endpoint_url or "the default AWS endpoint"
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
        return SourceError(f"cannot reach S3 at {where} for {uri}: {text}; {_ENDPOINT_HINT}")
    if any(
        marker in text
        for marker in (
            "ACCESS_DENIED",
            "INVALID_ACCESS_KEY_ID",
            "SIGNATURE_DOES_NOT_MATCH",
            "MISSING_AUTHENTICATION_TOKEN",
            "HTTP status 403",
            "credentials",
        )
    ):
        return SourceError(f"access to {uri} denied by {where}: {text}; {_CREDENTIALS_HINT}")
    if "NO_SUCH_BUCKET" in text:
        bucket, _ = parse_uri(uri)
        return SourceError(
            f"bucket {bucket!r} does not exist at {where} (from {uri}); check the bucket name, "
            "or set [s3] endpoint_url / AWS_ENDPOINT_URL if it lives on another server"
        )
    if "HTTP status 301" in text or "PERMANENT_REDIRECT" in text or "region" in text.lower():
        return SourceError(
            f"S3 refused {uri}: {text}; set [s3] region in loglake.toml or AWS_DEFAULT_REGION "
            "to the bucket's region"
        )
    return SourceError(f"cannot list or read {uri}: {text}")


def _class_end(part: str, start: int) -> int:
    """Index of the "]" closing the class opened at ``part[start]``; -1 when "[" is literal."""
    k = start + 1
    if part[k : k + 1] == "!":
        k += 1
    if part[k : k + 1] == "]":  # "[]abc]": a leading "]" is a member, as in glob
        k += 1
    return part.find("]", k)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a key glob: ``*`` and ``?`` stay within one ``/`` segment, ``**`` spans segments.

    ``[abc]`` / ``[!abc]`` are character classes, as in :mod:`glob`.
    """
    parts = pattern.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            # "a/**/b" must also match "a/b", hence the optional group.
            out.append(".*" if last else "(?:.*/)?")
            continue
        j = 0
        while j < len(part):
            c = part[j]
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[" and (end := _class_end(part, j)) > 0:
                body = part[j + 1 : end]
                negate = body.startswith("!")
                # Escape every member but "-" so ranges work and "^", "\\", "[" stay literal.
                members = "".join(ch if ch == "-" else re.escape(ch) for ch in body[negate:])
                out.append(("[^" if negate else "[") + members + "]")
                j = end
            else:
                out.append(re.escape(c))
            j += 1
        if not last:
            out.append("/")
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _input(fs: Any, info: Any, config: Config) -> Input:
    """The :class:`Input` for one listed object; ``open`` wraps read errors in SourceError."""
    path: str = info.path  # "bucket/key", as pyarrow names objects
    uri = f"s3://{path}"
    # pyarrow lists no ETag, and a HEAD per object to get one would make listing O(objects)
    # round trips, so the version is Last-Modified (1 s resolution on S3) in nanoseconds.
    mtime_ns = info.mtime_ns
    version = str(mtime_ns) if mtime_ns is not None else ""

    def opener() -> BinaryIO:
        try:
            # compression=None: pyarrow would otherwise decompress by extension, hiding the raw
            # bytes from open_decompressed (which detects by magic bytes and counts raw progress).
            stream = fs.open_input_stream(path, compression=None, buffer_size=_READ_BUFFER_BYTES)
        except FileNotFoundError as exc:
            raise SourceError(
                f"{uri} no longer exists (deleted or renamed after it was listed); list again"
            ) from exc
        except OSError as exc:
            raise _translate_error(uri, exc, config) from exc
        return cast(BinaryIO, stream)

    return Input(name=uri, key=uri, size=info.size, version=version, open=opener)


def _list_files(fs: Any, base: str, uri: str, config: Config) -> list[Any]:
    """Every object below ``base`` ("bucket" or "bucket/prefix"), recursively, sorted by key.

    Directory markers (keys ending in ``/``) and dot-files are skipped, as for local folders.
    """
    from pyarrow import fs as pafs

    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    try:
        infos = fs.get_file_info(selector)
    except OSError as exc:
        raise _translate_error(uri, exc, config) from exc
    files = [i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(".")]
    files.sort(key=lambda i: i.path)
    return files


def _check_bucket(fs: Any, bucket: str, uri: str, config: Config) -> None:
    """Raise a SourceError saying so when ``bucket`` does not exist (or cannot be seen)."""
    from pyarrow import fs as pafs

    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        raise _translate_error(uri, exc, config) from exc
    if info.type == pafs.FileType.NotFound:
        where = config.s3.endpoint_url or "the default AWS endpoint"
        raise SourceError(
            f"bucket {bucket!r} does not exist at {where} (from {uri}); check the bucket name, "
            "or set [s3] endpoint_url in loglake.toml or AWS_ENDPOINT_URL if it lives elsewhere"
        )


def list_inputs(spec: str, config: Config) -> Iterator[Input]:
    """Inputs named by ``spec``: ``s3://bucket/key``, ``s3://bucket/prefix[/]`` or a key glob.

    * an exact object key yields that object (it wins over a "folder" of the same name);
    * a prefix is a folder: ``s3://b/logs`` yields every object under ``logs/``, recursively, sorted
      by key (``s3://b`` alone lists the whole bucket);
    * a key with ``*``, ``?`` or ``[...]`` is a glob on the key (``**`` crosses ``/``), e.g.
      ``s3://b/logs/2024-*/*.log.gz``; matches are sorted by key.

    The listing happens on the first ``next()``. Raises :class:`SourceError` when the bucket does
    not exist, nothing matches, the endpoint cannot be reached or the credentials are refused.
    """
    bucket, key = parse_uri(spec)
    fs = _filesystem(config)
    key = key.rstrip("/")

    if _GLOB_CHARS.search(key):
        parts = key.split("/")
        fixed = next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))
        base = "/".join([bucket, *parts[:fixed]])
        regex = _glob_regex(key)
        infos = [
            i for i in _list_files(fs, base, spec, config) if regex.match(i.path[len(bucket) + 1 :])
        ]
        if not infos:
            _check_bucket(fs, bucket, spec, config)
            raise SourceError(
                f"no S3 object matches {spec}; check the pattern (s3://BUCKET/KEY-GLOB)"
            )
        for info in infos:
            yield _input(fs, info, config)
        return

    from pyarrow import fs as pafs

    path = f"{bucket}/{key}" if key else bucket
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise _translate_error(spec, exc, config) from exc
    if info.type == pafs.FileType.File:
        yield _input(fs, info, config)
        return
    infos = _list_files(fs, path, spec, config) if info.type == pafs.FileType.Directory else []
    if not infos:
        _check_bucket(fs, bucket, spec, config)
        raise SourceError(
            f"no S3 objects under {spec}; check the prefix (it is a folder: s3://{bucket}/logs "
            f"lists logs/...; use a glob such as s3://{bucket}/logs/2024-* for partial names)"
        )
    for info in infos:
        yield _input(fs, info, config)
