"""The two parse faults of issue 13: host-less RFC 3164 lines, empty bracketed nginx fields."""

from __future__ import annotations

from datetime import UTC, datetime

from loglake.formats import get_format
from loglake.formats.lines import line_batch

# fail2ban's test fixture fail2ban/tests/files/logs/sshd (lines written without a host), and
# a line of an Ubuntu auth.log (Dec 2013) posted in a public fail2ban write-up, whose host field
# is empty (two spaces).
HOSTLESS = (
    b"Nov 23 21:50:19 sshd[8148]: Disconnecting: Too many authentication failures for root "
    b"[preauth]\n"
    b"Nov 23 21:50:37 sshd[8148]: Connection closed by 61.0.0.1 [preauth]\n"
    b"Dec  9 01:01:25  sshd[15311]: last message repeated 5 times\n"
    # The same fixture: a line with a host, for contrast.
    b"Nov 28 09:16:05 srv sshd[32310]: Disconnecting: Too many authentication failures for git "
    b"[preauth]\n"
)

# ingress-nginx's default `log-format-upstream`, and a line it wrote (quoted in a public blog
# post about canary routing): `[$proxy_alternative_upstream_name]` is empty, `[]`.
INGRESS_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
    "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
    "$upstream_response_time $upstream_status $req_id"
)
INGRESS_LINE = (
    b'127.0.0.1 - - [25/Feb/2020:12:16:59 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/7.64.1" 84 '
    b"0.001 [default-user-service-80] [] 10.1.0.37:80 612 0.001 200 "
    b"56c050d5862b25d5f172b4ed202f407d\n"
)


def test_hostless_syslog_lines_have_no_host_and_the_right_tag() -> None:
    result = get_format("syslog", None, year=2004).parse(line_batch(HOSTLESS, 1, "x"))
    assert result.rejected.height == 0
    got = result.parsed.select("ts", "host", "app", "pid", "message").rows()
    assert got == [
        (
            datetime(2004, 11, 23, 21, 50, 19, tzinfo=UTC),
            None,
            "sshd",
            8148,
            "Disconnecting: Too many authentication failures for root [preauth]",
        ),
        (
            datetime(2004, 11, 23, 21, 50, 37, tzinfo=UTC),
            None,
            "sshd",
            8148,
            "Connection closed by 61.0.0.1 [preauth]",
        ),
        (
            datetime(2004, 12, 9, 1, 1, 25, tzinfo=UTC),
            None,
            "sshd",
            15311,
            "last message repeated 5 times",
        ),
        (
            datetime(2004, 11, 28, 9, 16, 5, tzinfo=UTC),
            "srv",
            "sshd",
            32310,
            "Disconnecting: Too many authentication failures for git [preauth]",
        ),
    ]


def test_hosts_that_look_like_words_stay_hosts() -> None:
    data = (
        b"Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n"  # RFC 3164
        b"Mar  1 10:00:00 fe80::1 kernel: link up\n"
        b"Mar  1 10:00:00 kernel: no host, no pid\n"
    )
    got = get_format("rfc3164", None, year=2024).parse(line_batch(data, 1, "x"))
    assert got.parsed.select("host", "app", "message").rows() == [
        ("mymachine", "su", "'su root' failed for lonvick on /dev/pts/8"),
        ("fe80::1", "kernel", "link up"),
        (None, "kernel", "no host, no pid"),
    ]


def test_empty_bracketed_field_of_an_ingress_nginx_line_parses() -> None:
    result = get_format(INGRESS_FORMAT).parse(line_batch(INGRESS_LINE, 1, "x"))
    assert result.rejected.height == 0
    row = result.parsed.row(0, named=True)
    assert row["ts"] == datetime(2020, 2, 25, 12, 16, 59, tzinfo=UTC)
    assert (row["client"], row["method"], row["path"], row["status"], row["bytes"]) == (
        "127.0.0.1",
        "GET",
        "/",
        200,
        612,
    )
    assert (row["user_agent"], row["bytes_received"], row["duration_ms"]) == (
        "curl/7.64.1",
        84,
        1.0,
    )
    assert row["proxy_upstream_name"] == "default-user-service-80"
    assert row["proxy_alternative_upstream_name"] is None  # `[]`
    assert (row["upstream_addr"], row["upstream_status"], row["req_id"]) == (
        "10.1.0.37:80",
        "200",
        "56c050d5862b25d5f172b4ed202f407d",
    )
