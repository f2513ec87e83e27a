"""Error logs, AWS logs and W3C logs end to end: one `loglake ingest` of a folder with a file per
format (each auto-detected), then queries by table name, Athena's written as for Athena."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

RunCli = Any  # the run_cli fixture from conftest.py
DATA = Path(__file__).resolve().parent / "data" / "formats"  # sources: SOURCES.md there


def query_json(run_cli: RunCli, sql: str, *options: str) -> list[dict[str, Any]]:
    out = run_cli("query", *options, "--format", "json", sql).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_w3c_directives_are_counted_apart_from_unparsed_lines(
    run_cli: RunCli, tmp_path: Path
) -> None:
    log = tmp_path / "u_ex021224.log"
    bad = "2002-05-24 20:18:02 172.224.24.114 - too few values\n"
    log.write_text((DATA / "iis.log").read_text() + bad)
    out = run_cli("ingest", str(log)).stdout
    assert "read 12 lines = parsed 2 + rejected 10 from 1 input(s)" in out
    assert f"{log}: w3c 2, W3C directives 9, unparsed 1 (of 12 lines)" in out
    reasons = query_json(
        run_cli, "SELECT line, reason FROM logs.rejected WHERE reason NOT LIKE 'W3C directive%'"
    )
    assert len(reasons) == 1 and reasons[0]["line"] == 12
    assert "values where its #Fields directive names" in reasons[0]["reason"]


@pytest.mark.slow
def test_a_folder_of_every_new_format(run_cli: RunCli, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    for path in DATA.glob("*.log"):
        shutil.copy(path, folder / path.name)
    # CloudFront delivers gzip files named <distribution>.<YYYY-MM-DD-HH>.<id>.gz.
    cloudfront = folder / "cloudfront.log"
    gz = folder / "EMLARXS9EXAMPLE.2019-12-04-21.RT4KCN4SGK9.gz"
    gz.write_bytes(gzip.compress(cloudfront.read_bytes()))
    cloudfront.unlink()
    out = run_cli("ingest", str(folder)).stdout
    # 11 rejected: the W3C directive lines (2 of CloudFront, 9 of IIS), kept as such, and
    # reported apart from lines that did not parse.
    assert "read 42 lines = parsed 31 + rejected 11 from 7 input(s)" in out
    assert "iis.log: w3c 2, W3C directives 9 (of 11 lines)" in out
    assert ".RT4KCN4SGK9.gz: cloudfront 3, W3C directives 2 (of 5 lines)" in out
    for table, rows in (
        ("logs.alb", 5),
        ("logs.clb", 4),
        ("logs.s3_access", 4),
        ("logs.cloudfront", 3),
        ("logs.w3c", 2),
        ("logs.errors", 13),
    ):
        assert f"{table}: +{rows} rows" in out
    reasons = query_json(
        run_cli,
        "SELECT reason, format, count(*) AS n FROM logs.rejected GROUP BY 1, 2 ORDER BY 2",
    )
    assert reasons == [
        {"reason": "W3C directive line: not a record", "format": "cloudfront", "n": 2},
        {"reason": "W3C directive line: not a record", "format": "w3c", "n": 9},
    ]

    # Athena documentation-style queries, only the table name changed.
    athena = ("--dialect", "athena")
    assert query_json(
        run_cli,
        "SELECT client_ip, count(*) AS n FROM logs.alb WHERE from_iso8601_timestamp(time) > "
        "from_iso8601_timestamp('2018-07-01T00:00:00Z') GROUP BY 1 ORDER BY 1",
        *athena,
    ) == [
        {"client_ip": "10.0.0.140", "n": 1},
        {"client_ip": "10.0.1.252", "n": 1},
        {"client_ip": "192.168.131.39", "n": 3},
    ]
    assert query_json(
        run_cli,
        "SELECT elb_name, backend_ip, count(*) AS n FROM logs.clb WHERE "
        "elb_response_code LIKE '2%' GROUP BY 1, 2",
        *athena,
    ) == [{"elb_name": "my-loadbalancer", "backend_ip": "10.0.0.1", "n": 2}]
    assert query_json(
        run_cli,
        "SELECT requester, key, httpstatus FROM logs.s3_access WHERE "
        "parse_datetime(requestdatetime, 'dd/MMM/yyyy:HH:mm:ss Z') BETWEEN "
        "parse_datetime('2019-02-06:00:00:00', 'yyyy-MM-dd:HH:mm:ss') AND "
        "parse_datetime('2019-02-07:00:00:00', 'yyyy-MM-dd:HH:mm:ss') "
        "AND operation = 'REST.PUT.OBJECT'",
        *athena,
    ) == [
        {
            "requester": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be",
            "key": "s3-dg.pdf",
            "httpstatus": "200",
        }
    ]
    assert query_json(
        run_cli,
        "SELECT SUM(sc_bytes) AS total_bytes FROM logs.cloudfront "
        "WHERE \"date\" BETWEEN DATE '2019-12-01' AND DATE '2019-12-31'",
        *athena,
    ) == [{"total_bytes": 392 + 392 + 900}]

    # The lake's own time column, and the other tables.
    assert query_json(run_cli, "SELECT ts, c_ip, sc_status FROM logs.w3c ORDER BY ts") == [
        {"ts": "2002-05-02T17:42:15", "c_ip": "172.22.255.255", "sc_status": 200},
        {"ts": "2002-05-24T20:18:01", "c_ip": "172.224.24.114", "sc_status": 200},
    ]
    errors = query_json(
        run_cli,
        "SELECT source, level, count(*) AS n FROM logs.errors GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert [(Path(r["source"]).name, r["level"], r["n"]) for r in errors] == [
        ("apache_error.log", "error", 3),
        ("apache_error.log", "notice", 1),
        ("apache_error.log", "trace3", 1),
        ("apache_error.log", "warn", 1),
        ("nginx_error.log", "error", 5),
        ("nginx_error.log", "notice", 2),
    ]
    upstream = query_json(
        run_cli, "SELECT ts, client, upstream FROM logs.errors WHERE upstream IS NOT NULL"
    )
    assert upstream == [
        {"ts": "2022-01-11T05:58:49", "client": "10.10.0.1", "upstream": "http://10.10.0.7:80/"}
    ]


def test_a_named_format_from_stdin(run_cli: RunCli) -> None:
    # fail2ban's fixture: the host-less sshd line, read as `--format syslog`.
    line = "Nov 23 21:50:19 sshd[8148]: Disconnecting: Too many authentication failures for root\n"
    out = run_cli("ingest", "--format", "syslog", "-", input=line).stdout
    assert "parsed 1 + rejected 0" in out
    assert query_json(run_cli, "SELECT host, app, pid FROM logs.syslog") == [
        {"host": None, "app": "sshd", "pid": 8148}
    ]
    nginx = (DATA / "nginx_error.log").read_text().splitlines()[0] + "\n"
    out = run_cli("ingest", "--format", "nginx_error", "-", input=nginx).stdout
    assert "logs.errors: +1 rows" in out
    assert query_json(run_cli, "SELECT connection, server, request FROM logs.errors") == [
        {"connection": 32086, "server": "nginx.com", "request": "GET / HTTP/1.0"}
    ]
