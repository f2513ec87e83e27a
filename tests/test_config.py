"""Configuration: defaults, TOML file, environment; unknown keys are errors that name the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loglake.config import load_config
from loglake.errors import ConfigError


def test_defaults_under_home(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path, environ={})
    assert cfg.home == tmp_path.resolve()
    assert cfg.catalog_uri == f"sqlite:///{tmp_path.resolve() / 'catalog.db'}"
    assert cfg.warehouse == (tmp_path / "warehouse").resolve().as_uri()
    assert cfg.table("logs.access").partition == "hour"
    assert cfg.table("logs.syslog").partition == "day"


def test_env_home_and_toml(tmp_path: Path) -> None:
    (tmp_path / "loglake.toml").write_text(
        '[tables."logs.web"]\npartition = "hour"\n[query]\nmax_rows = 10\n'
        '[formats]\nmine = "%h %t \\"%r\\" %>s"\n'
    )
    cfg = load_config(environ={"LOGLAKE_HOME": str(tmp_path), "AWS_ENDPOINT_URL": "http://x:9"})
    assert cfg.table("logs.web").partition == "hour"
    assert cfg.query.max_rows == 10
    assert cfg.formats["mine"] == '%h %t "%r" %>s'
    assert cfg.s3.endpoint_url == "http://x:9"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[query]\nmax_rowz = 1\n", "unknown key query.max_rowz; valid keys in [query]"),
        ("[querry]\n", "unknown section or key 'querry'"),
        ('[tables."logs.web"]\npartition = "week"\n', "choose one of hour, day, month, none"),
        ("[query]\nmax_rows = 'ten'\n", "query.max_rows must be int"),
        ("[query\n", "invalid TOML"),
        ('[server]\nlog_format = "xml"\n', "server.log_format = 'xml'; choose one of json, text"),
        ('[server]\nlog_level = "INFO"\n', "log_level = 'INFO'; choose one of debug, info"),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "loglake.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(home=tmp_path, environ={})


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(home=tmp_path, config_file=tmp_path / "nope.toml", environ={})


def test_every_setting_is_documented() -> None:
    import dataclasses

    from loglake.config import (
        AlertConfig,
        AuthConfig,
        CatalogConfig,
        ContinuousQueryConfig,
        IngestConfig,
        QueryConfig,
        S3Config,
        ServerConfig,
        StreamConfig,
        SyslogConfig,
        TableConfig,
        TailConfig,
    )

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    sections = {
        "catalog": CatalogConfig,
        "s3": S3Config,
        "ingest": IngestConfig,
        "query": QueryConfig,
        "server": ServerConfig,
        "streams.NAME": StreamConfig,
        "syslog": SyslogConfig,
        "tail.NAME": TailConfig,
        "auth": AuthConfig,
        "queries.NAME": ContinuousQueryConfig,
        "alerts.NAME": AlertConfig,
    }
    missing = [
        f"{name}.{f.name}"
        for name, cls in sections.items()
        for f in dataclasses.fields(cls)
        if f"`{name}.{f.name}`" not in doc
        and f"`{name}.{f.name}`," not in doc
        and f"{name}.{f.name}" not in doc
    ]
    missing += [
        f"tables.*.{f.name}" for f in dataclasses.fields(TableConfig) if f".{f.name}`" not in doc
    ]
    assert missing == []


def test_continuous_queries_are_checked_at_load(tmp_path: Path) -> None:
    from loglake.config import query_spec
    from loglake.errors import ConfigError

    good = (
        '[queries.hits]\nstream = "web"\nwindow = "hopping 5m every 1m"\n'
        'sql = "SELECT count(*) AS n FROM stream"\nlateness = "0s"\n'
    )
    (tmp_path / "loglake.toml").write_text(good)
    cfg = load_config(home=tmp_path, environ={})
    spec = query_spec(cfg, "hits")
    assert (spec.window.size, spec.window.slide, spec.lateness) == (300_000_000, 60_000_000, 0)
    for bad, message in (
        (good.replace("hopping 5m every 1m", "tumbling"), "queries.hits.window"),
        (good.replace('lateness = "0s"', 'lateness = "soon"'), "queries.hits.lateness"),
        (good.replace('stream = "web"', ""), "queries.hits.stream is missing"),
        (good + 'colour = "red"\n', "colour"),
    ):
        (tmp_path / "loglake.toml").write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_config(home=tmp_path, environ={})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"buffer_seconds": "x"}, "streams.s.buffer_seconds must be float, got 'x'"),
        ({"buffer_records": "many"}, "streams.s.buffer_records must be int, got 'many'"),
        ({"buffer_records": True}, "streams.s.buffer_records must be int, got True"),
        ({"buffer_seconds": True}, "streams.s.buffer_seconds must be float, got True"),
        ({"buffer_seconds": 0}, "buffer_seconds = 0.0; use more than 0 and at most 3600"),
        ({"buffer_seconds": -1}, "buffer_seconds = -1.0; use more than 0"),
        ({"buffer_seconds": float("nan")}, "buffer_seconds must be a finite number"),
        ({"buffer_seconds": 3601}, "at most 3600 seconds"),
        ({"buffer_records": 0}, "buffer_records = 0; use 1 or more"),
        ({"max_log_bytes": 100}, "max_log_bytes = 100; use at least 65536"),
        ({"table": "logs.a/b"}, "must be NAMESPACE.NAME"),
        ({"table": "logs."}, "must be NAMESPACE.NAME"),
        ({"colour": "red"}, "unknown key streams.s.colour"),
    ],
)
def test_stream_settings_are_checked_wherever_they_come_from(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    """One function checks a stream's settings for the config file, the API and saved state."""
    from loglake.config import stream_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        stream_config("s", settings)
    (tmp_path / "loglake.toml").write_text(
        "[streams.s]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(home=tmp_path, environ={})


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return "nan" if value != value else repr(value)


@pytest.mark.parametrize("name", [".", "..", "...", "", "a/b", "x" * 129, "a b"])
def test_stream_names_are_one_safe_folder_name(name: str) -> None:
    from loglake.config import stream_config

    with pytest.raises(ConfigError, match="not only dots"):
        stream_config(name, {})


def test_good_stream_settings_and_names() -> None:
    from loglake.config import StreamConfig, stream_config

    assert stream_config("app.logs-1", {"buffer_seconds": 2, "table": "logs.app"}) == StreamConfig(
        buffer_seconds=2.0, table="logs.app"
    )
    assert stream_config(".hidden..x", {}) == StreamConfig()


def test_bools_are_not_numbers_in_any_section(tmp_path: Path) -> None:
    (tmp_path / "loglake.toml").write_text("[query]\nmax_rows = true\n")
    with pytest.raises(ConfigError, match=re.escape("query.max_rows must be int, got True")):
        load_config(home=tmp_path, environ={})
    (tmp_path / "loglake.toml").write_text("[server]\nbody_timeout_s = inf\n")
    with pytest.raises(
        ConfigError, match=re.escape("server.body_timeout_s must be a finite number")
    ):
        load_config(home=tmp_path, environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nmax_streams = 0\n", "server.max_streams = 0; use 1 or more"),
        ("[server]\nmax_records_per_request = 0\n", "max_records_per_request = 0"),
        ("[server]\nmax_header_bytes = 100\n", "max_header_bytes must be at least 1024"),
        ("[server]\nbody_timeout_s = 0\n", "body_timeout_s must be positive"),
    ],
)
def test_server_limits_are_checked(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "loglake.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(home=tmp_path, environ={})


def test_query_names_and_durations_are_bounded(tmp_path: Path) -> None:
    good = (
        '[queries.hits]\nstream = "web"\nwindow = "tumbling 1m"\n'
        'sql = "SELECT count(*) AS n FROM stream"\n'
    )
    for bad, message in (
        (good.replace("[queries.hits]", '[queries.".."]'), "query names are letters"),
        (good.replace("[queries.hits]", '[queries."a.b"]'), "query names are letters"),
        (good + 'lateness = "99999999999d"\n', "longest duration allowed, 365d"),
        (good.replace("tumbling 1m", "tumbling 366d"), "longest duration allowed, 365d"),
    ):
        (tmp_path / "loglake.toml").write_text(bad)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(home=tmp_path, environ={})
    (tmp_path / "loglake.toml").write_text(good + 'lateness = "365d"\n')
    assert load_config(home=tmp_path, environ={}).queries["hits"].lateness == "365d"


@pytest.mark.parametrize(
    "text",
    [
        '[tail.app]\npaths = ["/var/log/app.log"]\nstream = ".."\n',
        '[syslog]\nstream = "."\n',
        '[streams.".."]\nformat = "json"\n',
    ],
)
def test_every_stream_name_of_the_file_is_a_safe_folder_name(tmp_path: Path, text: str) -> None:
    (tmp_path / "loglake.toml").write_text(text)
    with pytest.raises(ConfigError, match="not only dots"):
        load_config(home=tmp_path, environ={})
