"""Every registered format name is documented in docs/formats.md, and detection tries it."""

from __future__ import annotations

from pathlib import Path

from loglake.formats import DETECT_ORDER, REGISTRY, get_format

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def test_every_registered_format_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name in REGISTRY if f"`{name}`" not in text]
    assert missing == []


def test_detection_tries_every_new_format() -> None:
    assert len(DETECT_ORDER) == len(set(DETECT_ORDER)) and set(DETECT_ORDER) <= set(REGISTRY)
    for name in ("apache_error", "nginx_error", "alb", "clb", "s3_access", "cloudfront", "w3c"):
        assert name in DETECT_ORDER and get_format(name).name == name
    # Before syslog: a CLB line also reads as an RFC 3164 line with an RFC 3339 stamp.
    assert DETECT_ORDER.index("clb") < DETECT_ORDER.index("rfc3164")
