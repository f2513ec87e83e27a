"""Auto-detection per group of lines through the real CLI: a file mixing formats keeps every line
some format parses, each in its format's table, and only the others go to ``logs.rejected``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RunCli = Any  # the run_cli fixture from conftest.py

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
VHOST = [
    f'www.example.org:443 10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/2.0" 200 512 "-" "{UA}"',
    f'shop.example.org:80 10.0.0.2 - - [01/Jan/2024:00:00:01 +0000] "GET /cart HTTP/1.1" 302 0 "-" "{UA}"',
]
COMBINED = [
    f'10.0.0.3 - - [01/Jan/2024:00:00:02 +0000] "GET /a HTTP/1.1" 200 7 "-" "{UA}"',
    f'10.0.0.4 - bob [01/Jan/2024:00:00:03 +0000] "POST /login HTTP/1.1" 401 12 '
    f'"https://www.example.org/" "{UA}"',
]
# Real lines: the Linux sample of loghub (RFC 3164 as rsyslog writes files) and RFC 5424 section 6.5.
RFC3164 = [
    "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 "
    "tty=NODEVssh ruser= rhost=218.188.2.4",
    "Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown",
    "Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
]
RFC5424 = [
    "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the "
    "do-nuts.",
    '<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"'
    ' eventSource="Application" eventID="1011"] An application event log entry...',
]
# nginx's default access format (main, with X-Forwarded-For) and error lines as nginx writes them.
NGINX_ACCESS = [
    f'203.0.113.9 - - [02/Jan/2024:10:00:00 +0000] "GET /index.html HTTP/1.1" 200 615 "-" "{UA}" "-"',
    f'203.0.113.9 - - [02/Jan/2024:10:00:01 +0000] "GET /missing HTTP/1.1" 404 153 "-" "{UA}" '
    '"198.51.100.7"',
    f'198.51.100.20 - - [02/Jan/2024:10:00:02 +0000] "GET / HTTP/1.1" 200 615 "-" "{UA}" "-"',
]
NGINX_ERROR = [
    '2024/01/02 10:00:01 [error] 29#29: *1 open() "/usr/share/nginx/html/missing" failed (2: No '
    'such file or directory), client: 203.0.113.9, server: localhost, request: "GET /missing '
    'HTTP/1.1", host: "localhost"',
    "2024/01/02 10:00:05 [notice] 1#1: signal 3 (SIGQUIT) received, shutting down",
]


def query_json(run_cli: RunCli, sql: str) -> list[dict[str, object]]:
    out = run_cli("query", "--format", "json", sql).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def counts(stdout: str) -> tuple[int, int, int]:
    m = re.search(r"read ([\d,]+) lines = parsed ([\d,]+) \+ rejected ([\d,]+)", stdout)
    assert m, stdout
    return tuple(int(g.replace(",", "")) for g in m.groups())  # type: ignore[return-value]


def table_rows(stdout: str) -> dict[str, int]:
    return {t: int(n.replace(",", "")) for t, n in re.findall(r"  (\S+): \+([\d,]+) rows", stdout)}


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def rejected(run_cli: RunCli) -> list[dict[str, object]]:
    return query_json(
        run_cli,
        "SELECT source, line, reason, format, target_table, text FROM logs.rejected "
        "ORDER BY source, line",
    )


def test_vhost_and_plain_access_lines_both_land_in_logs_access(
    run_cli: RunCli, tmp_path: Path
) -> None:
    # No format fits half the lines: one format per file rejected all six.
    src = write(
        tmp_path / "other_vhosts_access.log",
        [VHOST[0], COMBINED[0], "", VHOST[1], "garbage", COMBINED[1]],
    )
    out = run_cli("ingest", str(src)).stdout
    assert counts(out) == (6, 4, 2)
    assert table_rows(out) == {"logs.access": 4, "logs.rejected": 2}
    assert f"  {src}: vhost_combined 2, combined 2, unparsed 2 (of 6 lines)" in out
    assert "formats detected:" in out
    rows = query_json(
        run_cli,
        "SELECT line, vhost, port, client, path, status, user FROM logs.access ORDER BY line",
    )
    assert rows == [
        {
            "line": 1,
            "vhost": "www.example.org",
            "port": 443,
            "client": "10.0.0.1",
            "path": "/",
            "status": 200,
            "user": None,
        },
        {
            "line": 2,
            "vhost": None,
            "port": None,
            "client": "10.0.0.3",
            "path": "/a",
            "status": 200,
            "user": None,
        },
        {
            "line": 4,
            "vhost": "shop.example.org",
            "port": 80,
            "client": "10.0.0.2",
            "path": "/cart",
            "status": 302,
            "user": None,
        },
        {
            "line": 6,
            "vhost": None,
            "port": None,
            "client": "10.0.0.4",
            "path": "/login",
            "status": 401,
            "user": "bob",
        },
    ]
    assert [
        (r["line"], r["reason"], r["format"], r["target_table"]) for r in rejected(run_cli)
    ] == [
        (3, "empty line", "vhost_combined", "logs.access"),
        (5, "does not match the vhost_combined format", "vhost_combined", "logs.access"),
    ]


def test_rfc3164_and_rfc5424_lines_of_one_file_both_land_in_logs_syslog(
    run_cli: RunCli, tmp_path: Path
) -> None:
    src = write(
        tmp_path / "messages",
        [RFC3164[0], RFC5424[0], RFC3164[1], "not syslog at all", RFC5424[1], RFC3164[2]],
    )
    out = run_cli("ingest", str(src)).stdout
    assert counts(out) == (6, 5, 1)
    assert table_rows(out) == {"logs.syslog": 5, "logs.rejected": 1}
    assert f"  {src}: rfc3164 3, rfc5424 2, unparsed 1 (of 6 lines)" in out
    rows = query_json(
        run_cli, "SELECT line, host, app, pid, msgid, severity FROM logs.syslog ORDER BY line"
    )
    assert rows == [
        {
            "line": 1,
            "host": "combo",
            "app": "sshd(pam_unix)",
            "pid": 19939,
            "msgid": None,
            "severity": None,
        },
        {
            "line": 2,
            "host": "192.0.2.1",
            "app": "myproc",
            "pid": 8710,
            "msgid": None,
            "severity": "notice",
        },
        {
            "line": 3,
            "host": "combo",
            "app": "sshd(pam_unix)",
            "pid": 19937,
            "msgid": None,
            "severity": None,
        },
        {
            "line": 5,
            "host": "mymachine.example.com",
            "app": "evntslog",
            "pid": None,
            "msgid": "ID47",
            "severity": "notice",
        },
        {
            "line": 6,
            "host": "combo",
            "app": "su(pam_unix)",
            "pid": 21416,
            "msgid": None,
            "severity": None,
        },
    ]
    assert [(r["line"], r["reason"], r["format"], r["text"]) for r in rejected(run_cli)] == [
        (4, "does not match RFC 3164 syslog", "rfc3164", "not syslog at all")
    ]


def test_nginx_access_and_error_lines_go_to_their_own_tables(
    run_cli: RunCli, tmp_path: Path
) -> None:
    lines = [NGINX_ACCESS[0], NGINX_ACCESS[1], NGINX_ERROR[0], NGINX_ACCESS[2], NGINX_ERROR[1]]
    src = write(tmp_path / "nginx.log", lines)
    out = run_cli("ingest", str(src)).stdout
    assert counts(out) == (5, 5, 0)
    assert table_rows(out) == {"logs.access": 3, "logs.errors": 2}
    assert f"  {src}: nginx_main 3, nginx_error 2 (of 5 lines)" in out
    access = query_json(
        run_cli, "SELECT line, status, forwarded_for FROM logs.access ORDER BY line"
    )
    assert access == [
        {"line": 1, "status": 200, "forwarded_for": None},
        {"line": 2, "status": 404, "forwarded_for": "198.51.100.7"},
        {"line": 4, "status": 200, "forwarded_for": None},
    ]
    errors = query_json(run_cli, "SELECT line, level, pid, client FROM logs.errors ORDER BY line")
    assert errors == [
        {"line": 3, "level": "error", "pid": 29, "client": "203.0.113.9"},
        {"line": 5, "level": "notice", "pid": 1, "client": None},
    ]
    assert rejected(run_cli) == []
    # --table renames the main format's table; the error lines keep theirs.
    again = run_cli("ingest", "--force", "--table", "web.site", str(src)).stdout
    assert table_rows(again) == {"web.site": 3, "logs.errors": 2}


def test_continuation_lines_are_the_only_lines_rejected(run_cli: RunCli, tmp_path: Path) -> None:
    # A Java stack trace logged through syslog: most lines are continuations, which fit no format.
    trace = [
        'Exception in thread "main" java.lang.IllegalStateException: pool closed',
        "\tat com.example.db.Pool.borrow(Pool.java:88)",
        "\tat com.example.app.Main.run(Main.java:41)",
        "\tat com.example.app.Main.main(Main.java:12)",
    ]
    src = write(tmp_path / "app.log", [RFC3164[0], *trace, RFC3164[1]])
    proc = run_cli("ingest", str(src))
    assert counts(proc.stdout) == (6, 2, 4) and "not recognized" not in proc.stderr
    assert table_rows(proc.stdout) == {"logs.syslog": 2, "logs.rejected": 4}
    assert f"  {src}: rfc3164 2, unparsed 4 (of 6 lines)" in proc.stdout
    assert [(r["line"], r["reason"], r["text"]) for r in rejected(run_cli)] == [
        (n, "does not match RFC 3164 syslog", text) for n, text in enumerate(trace, start=2)
    ]


def test_an_input_changing_format_part_way_keeps_every_line(
    run_cli: RunCli, tmp_path: Path
) -> None:
    # Batches of 64 KiB: the access lines fill several, then the syslog lines several more.
    cfg = tmp_path / "small-chunks.toml"
    cfg.write_text("[ingest]\nchunk_bytes = 65536\n")
    access = [COMBINED[i % 2] for i in range(1500)]
    syslog = [RFC3164[i % 3] for i in range(1500)]
    src = write(tmp_path / "rotated.log", [*access, *syslog])
    out = run_cli("--config", str(cfg), "ingest", str(src)).stdout
    assert counts(out) == (3000, 3000, 0)
    assert table_rows(out) == {"logs.access": 1500, "logs.syslog": 1500}
    assert f"  {src}: combined 1,500, rfc3164 1,500 (of 3,000 lines)" in out
    assert query_json(run_cli, "SELECT min(line) AS a, max(line) AS b FROM logs.syslog") == [
        {"a": 1501, "b": 3000}
    ]


def test_a_given_format_is_the_only_one_tried(run_cli: RunCli, tmp_path: Path) -> None:
    src = write(tmp_path / "access.log", [VHOST[0], COMBINED[0], VHOST[1], COMBINED[1]])
    out = run_cli("ingest", "--format", "combined", str(src)).stdout
    assert counts(out) == (4, 2, 2)
    assert "formats:" in out and f"  {src}: combined 2, unparsed 2 (of 4 lines)" in out
    assert [(r["line"], r["reason"]) for r in rejected(run_cli)] == [
        (1, "does not match the combined format"),
        (3, "does not match the combined format"),
    ]


def test_unrecognized_and_empty_inputs_are_reported(run_cli: RunCli, tmp_path: Path) -> None:
    notes = write(tmp_path / "notes.txt", ["hello", "world"])
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    proc = run_cli("ingest", str(notes), str(empty))
    assert counts(proc.stdout) == (2, 0, 2)
    assert f"  {notes}: none recognized (2 lines)" in proc.stdout
    assert f"  {empty}: no lines" in proc.stdout
    assert (
        f"warning: {notes}: format not recognized" in proc.stderr and str(empty) not in proc.stderr
    )
    assert {r["reason"] for r in rejected(run_cli)} == {"format not recognized; pass --format"}
