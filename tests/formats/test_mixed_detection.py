"""Detection per group of lines (formats/mixed.py) on batches that do not start at line 1."""

from __future__ import annotations

from loglake.formats.lines import line_batch
from loglake.formats.mixed import Detector

OPTIONS: dict[str, object] = {"timezone": "UTC", "ts_field": "ts"}
ACCESS = b'10.0.0.3 - - [01/Jan/2024:00:00:02 +0000] "GET /a HTTP/1.1" 200 7 "-" "curl/8.5.0"'
ERROR = b"2024/01/02 10:00:05 [notice] 1#1: signal 3 (SIGQUIT) received, shutting down"
JSON = b'{"ts": "2024-01-02T10:00:06Z", "level": "info", "msg": "ready"}'


def test_leftover_lines_keep_their_source_line_numbers_and_bytes() -> None:
    data = b"\n".join([ACCESS, ERROR, b"\xff\xfe not a log line", ACCESS, b"", JSON, ERROR])
    detector = Detector(OPTIONS, unrecognized="format not recognized")
    batch = line_batch(data + b"\n", 1001, "mixed.log")
    main = detector.best(batch.text)
    assert main is not None and main.name == "combined"
    split = detector.split(batch, main)
    found = {g.format.name: g.rows.get_column("line").to_list() for g in split.groups}
    assert found == {"combined": [1001, 1004], "nginx_error": [1002, 1007], "json": [1006]}
    assert [g.format.default_table for g in split.groups] == [
        "logs.access",
        "logs.errors",
        "logs.json",
    ]
    errors = next(g.rows for g in split.groups if g.format.name == "nginx_error")
    assert errors.get_column("level").to_list() == ["notice", "notice"]
    assert split.rejected.rows() == [
        (1003, b"\xff\xfe not a log line", "does not match the combined format"),
        (1005, b"", "empty line"),
    ]
    assert split.busiest is main  # 2 lines each: ties go to the format tried first


def test_a_clean_batch_is_parsed_by_its_main_format_alone() -> None:
    detector = Detector(OPTIONS, unrecognized="format not recognized")
    batch = line_batch(b"\n".join([ACCESS] * 50) + b"\n", 1, "a.log")
    split = detector.split(batch, detector.format("combined"))
    assert [(g.format.name, g.rows.height) for g in split.groups] == [("combined", 50)]
    assert split.rejected.height == 0


def test_without_a_main_format_every_format_is_tried() -> None:
    detector = Detector(OPTIONS, unrecognized="format not recognized")
    batch = line_batch(b"hello\n" + ERROR + b"\n", 7, "b.log")
    split = detector.split(batch, None)
    assert [(g.format.name, g.rows.get_column("line").to_list()) for g in split.groups] == [
        ("nginx_error", [8])
    ]
    assert split.busiest is not None and split.busiest.name == "nginx_error"
    # The busiest format, nginx_error, was tried on "hello": its reason is kept.
    assert split.rejected.rows() == [(7, b"hello", "does not match the nginx error log format")]
