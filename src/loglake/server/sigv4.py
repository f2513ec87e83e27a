"""AWS Signature Version 4 verification for the AWS-compatible ingest API.

Written from the SigV4 specification (canonical request -> string to sign -> HMAC-SHA256 key chain)
with the standard library only, so loglake needs no AWS SDK at run time. Only the ``Authorization``
header form is accepted (the one the SDKs and the AWS CLI send for Kinesis and Firehose); presigned
query-string URLs are not.

:func:`verify` answers ``None`` when the request is signed by one of the configured key pairs, or an
:class:`AuthFailure` naming the AWS error code to send back. It never raises on malformed input.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from loglake.sources.live import AuthRefused

if TYPE_CHECKING:
    from loglake.config import Config
    from loglake.sources.live import SignedRequest

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)  # what AWS allows between the signer's clock and its own
SERVICES = frozenset({"kinesis", "firehose"})
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_SPACES = re.compile(r"\s+")
_AUTH_FIELD = re.compile(r"\s*(Credential|SignedHeaders|Signature)\s*=\s*([^,\s]*)\s*")


@dataclass(frozen=True)
class AuthFailure:
    """Why a request is refused: the AWS error code, a message and the HTTP status to answer with."""

    code: str
    message: str
    status: int = 400


@dataclass(frozen=True)
class Signed:
    """The parts of a verified ``Authorization`` header a handler may use (for ARNs, logs)."""

    access_key: str
    region: str
    service: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived key: HMAC chain over ``AWS4<secret>``, date (YYYYMMDD), region, service."""
    key = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _normalize_path(path: str) -> str:
    """Remove ``.`` and ``..`` segments and repeated slashes, keeping a trailing slash."""
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment not in ("", "."):
            parts.append(segment)
    normalized = "/" + "/".join(parts)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return normalized


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """The canonical request of the spec.

    ``path`` and ``query`` are as sent on the wire (still percent-encoded); ``headers`` are all
    (name, value) pairs, repeated names allowed. Each query key and value is decoded and re-encoded
    the one canonical way, so encoding differences there do not break signatures.
    """
    # Non-S3 services encode the path twice: the wire form (encoded once) is encoded again, after
    # removing dot segments, as botocore and the other SDKs do.
    canonical_path = quote(_normalize_path(path or "/"), safe="/~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(_SPACES.sub(" ", value.strip()))
    canonical_headers = "".join(f"{h}:{','.join(values.get(h, []))}\n" for h in signed_headers)
    return "\n".join(
        [
            method.upper(),
            canonical_path,
            canonical_query,
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def verify(
    credentials: Mapping[str, str],
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    now: datetime | None = None,
) -> Signed | AuthFailure:
    """Check the SigV4 ``Authorization`` header of a request against ``credentials`` (key -> secret).

    Returns :class:`Signed` when the signature matches, else an :class:`AuthFailure`:
    ``MissingAuthenticationTokenException`` (no header), ``IncompleteSignatureException`` (header
    unparsable), ``UnrecognizedClientException`` (unknown access key) or
    ``InvalidSignatureException`` (wrong signature, body altered, clock skew over 15 minutes).
    """
    lower = [(k.lower(), v) for k, v in headers]
    first: dict[str, str] = {}
    for k, v in lower:
        first.setdefault(k, v)
    auth = first.get("authorization", "")
    if not auth:
        return AuthFailure(
            "MissingAuthenticationTokenException", "Missing Authentication Token", 403
        )
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        return AuthFailure(
            "IncompleteSignatureException",
            f"Authorization header must use {ALGORITHM}, got {algorithm[:40]!r}",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _AUTH_FIELD.fullmatch(part)
        if match:
            fields[match.group(1)] = match.group(2)
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        return AuthFailure(
            "IncompleteSignatureException",
            f"Authorization header lacks {', '.join(missing)}",
        )
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return AuthFailure(
            "IncompleteSignatureException",
            "Credential must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request",
        )
    access_key, date, region, service, _ = scope
    secret = credentials.get(access_key)
    if secret is None:
        # AWS's wording for an access key it does not know.
        return AuthFailure(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if service not in SERVICES:
        return AuthFailure(
            "InvalidSignatureException",
            f"Credential should be scoped to a valid service (kinesis or firehose), not {service!r}",
        )
    signed_headers = fields["SignedHeaders"].lower().split(";")
    amz_date = first.get("x-amz-date", "")
    if "host" not in signed_headers or "x-amz-date" not in signed_headers or not amz_date:
        # Without host and the date under the signature, a captured request could be replayed
        # elsewhere or later.
        return AuthFailure(
            "InvalidSignatureException", "host and x-amz-date must be signed headers"
        )
    try:
        when = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        return AuthFailure(
            "IncompleteSignatureException", f"X-Amz-Date {amz_date[:40]!r} is not YYYYMMDDTHHMMSSZ"
        )
    current = now or datetime.now(UTC)
    if abs(current - when) > MAX_SKEW:
        return AuthFailure(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is not within 15 minutes of the server time "
            f"{current.strftime(_AMZ_DATE)}",
        )
    if date != amz_date[:8]:
        return AuthFailure(
            "InvalidSignatureException",
            f"Credential date {date!r} does not match X-Amz-Date {amz_date!r}",
        )
    payload_hash = sha256_hex(body)
    claimed = first.get("x-amz-content-sha256")
    if claimed is not None and claimed != payload_hash:
        # UNSIGNED-PAYLOAD is refused too: the records themselves must be under the signature.
        return AuthFailure(
            "InvalidSignatureException", "x-amz-content-sha256 does not match the request body"
        )
    request = canonical_request(method, path, query, lower, signed_headers, payload_hash)
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            amz_date,
            f"{date}/{region}/{service}/aws4_request",
            sha256_hex(request.encode()),
        ]
    )
    expected = hmac.new(
        signing_key(secret, date, region, service), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"].lower()):
        return AuthFailure(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
    return Signed(access_key, region, service)


def verifier(config: Config) -> Callable[[SignedRequest], str] | None:
    """The server's check of AWS API requests, handed to the AWS sources in their context.

    With ``[auth.aws_credentials]``: a request must be signed by one of them; the check returns
    the region it was signed for or raises :class:`AuthRefused` with AWS's code. With only
    ``[auth] api_keys``: every AWS request is refused, rather than be the one open door. With no
    credentials at all: None (requests are taken unsigned; the server listens on loopback only).
    """
    credentials = dict(config.auth.aws_credentials)
    if credentials:

        def check(request: SignedRequest) -> str:
            verdict = verify(
                credentials,
                request.method,
                request.path,
                request.query,
                request.headers,
                request.body,
            )
            if isinstance(verdict, AuthFailure):
                raise AuthRefused(verdict.code, verdict.message, verdict.status)
            return verdict.region

        return check
    if config.auth.enabled:

        def refuse(request: SignedRequest) -> str:
            raise AuthRefused(
                "UnrecognizedClientException",
                "The security token included in the request is invalid. (loglake: set "
                "[auth.aws_credentials] to use the AWS API when [auth] api_keys is set)",
            )

        return refuse
    return None
