"""Configuration: defaults, TOML file, environment; unknown keys are errors that name the fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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
        JobConfig,
        MaintenanceConfig,
        QueryConfig,
        S3Config,
        ServerConfig,
        StreamConfig,
        SyslogConfig,
        TableConfig,
        TailConfig,
    )
    from loglake.config.crawl import CrawlConfig, ScheduledCrawlConfig

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    sections = {
        "catalog": CatalogConfig,
        "s3": S3Config,
        "ingest": IngestConfig,
        "crawl": CrawlConfig,
        "query": QueryConfig,
        "maintenance": MaintenanceConfig,
        "server": ServerConfig,
        "streams.NAME": StreamConfig,
        "syslog": SyslogConfig,
        "tail.NAME": TailConfig,
        "auth": AuthConfig,
        "queries.NAME": ContinuousQueryConfig,
        "alerts.NAME": AlertConfig,
        "jobs.NAME": JobConfig,
        "crawls.NAME": ScheduledCrawlConfig,
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


# -- one strict parser for the TOML file, the HTTP API and saved state (issue 10, finding 1) ------

_QUERY = {"stream": "s", "window": "tumbling 1m", "sql": "SELECT count(*) AS n FROM stream"}

# (section, settings, message): each refused with the key named, the type and what was given.
_WRONG = [
    ("streams", {"buffer_records": True}, "streams.s.buffer_records must be int, got True"),
    ("streams", {"max_log_bytes": 1.5e6}, "streams.s.max_log_bytes must be int, got 1500000.0"),
    ("streams", {"buffer_seconds": "2"}, "streams.s.buffer_seconds must be float, got '2'"),
    (
        "streams",
        {"colour": "red"},
        "unknown key streams.s.colour; valid keys in [streams.s]: buffer_records, "
        "buffer_seconds, format, max_log_bytes",  # (the file's list goes on: ready_queries)
    ),
    (
        "streams",
        {"table": ["logs", "x"]},
        "streams.s.table must be str, got ['logs', 'x'] (a list)",
    ),
    ("queries", {**_QUERY, "anomaly_history": True}, "queries.q.anomaly_history must be int"),
    ("queries", {**_QUERY, "anomaly_threshold": "4"}, "queries.q.anomaly_threshold must be float"),
    ("queries", {**_QUERY, "colour": "red"}, "unknown key queries.q.colour; valid keys"),
    (
        "queries",
        {**_QUERY, "anomaly_by": "status"},
        "queries.q.anomaly_by must be a list of strings, got 'status' (a string)",
    ),
    (
        "queries",
        {**_QUERY, "anomaly_by": ["status", 5]},
        "queries.q.anomaly_by[1] must be str, got 5 (an integer)",
    ),
    ("queries", {**_QUERY, "prometheus": 1}, "queries.q.prometheus must be bool, got 1"),
]


def _toml_table(header: str, settings: dict[str, object]) -> str:
    def value(v: object) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return _toml(v)

    return f"[{header}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in settings.items())


def _through_every_path(tmp_path: Path, section: str, settings: dict[str, object]) -> list[object]:
    """``settings`` of ``[streams.s]`` / ``[queries.q]`` parsed as the config file, the HTTP API
    and the server's saved state have them parsed; each result or the ConfigError raised."""
    from loglake.config import continuous_query, read_saved, stream_config

    name = "s" if section == "streams" else "q"
    results: list[object] = []
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True, exist_ok=True)
    # The file (a [queries] entry needs its stream declared).
    text = _toml_table(f"{section}.{name}", settings)
    (home / "loglake.toml").write_text(text + ("[streams.s]\n" if section == "queries" else ""))
    try:
        cfg = load_config(home=home, environ={})
        results.append(cfg.streams["s"] if section == "streams" else cfg.queries["q"])
    except ConfigError as exc:
        results.append(exc)
    # The API: PUT /v1/streams/NAME and PUT /v1/queries/NAME hand the JSON body to these.
    body = json.loads(json.dumps(settings))
    try:
        results.append(
            stream_config(name, body, "api")
            if section == "streams"
            else continuous_query(name, body)
        )
    except ConfigError as exc:
        results.append(exc)
    # Saved state: state/streams.json and state/queries.json, read back at start.
    saved = home / "state" / f"{section}.json"
    saved.write_text(json.dumps({name: settings}))
    values = read_saved(saved)[name]
    try:
        results.append(
            stream_config(name, values, "state")
            if section == "streams"
            else continuous_query(name, values)
        )
    except ConfigError as exc:
        results.append(exc)
    return results


@pytest.mark.parametrize(("section", "settings", "message"), _WRONG)
def test_a_wrong_setting_is_refused_the_same_way_by_file_api_and_saved_state(
    tmp_path: Path, section: str, settings: dict[str, object], message: str
) -> None:
    results = _through_every_path(tmp_path, section, settings)
    assert [type(r) for r in results] == [ConfigError] * 3, results
    for refused in results:
        assert message in str(refused)


def test_the_same_settings_give_the_same_typed_config_through_every_path(tmp_path: Path) -> None:
    import dataclasses

    from loglake.config import (
        ContinuousQueryConfig,
        StreamConfig,
        continuous_query,
        saved_stream_settings,
        stream_config,
    )

    stream = {
        "format": "json",
        "table": "logs.app",
        "buffer_seconds": 2,
        "buffer_records": 10,
        "max_log_bytes": 1 << 20,
    }
    expected = StreamConfig(
        format="json",
        table="logs.app",
        buffer_seconds=2.0,
        buffer_records=10,
        max_log_bytes=1 << 20,
    )
    assert _through_every_path(tmp_path, "streams", stream) == [expected] * 3
    assert isinstance(expected.buffer_seconds, float)
    # What the server saves of it reads back as the same config.
    saved = json.loads(json.dumps(saved_stream_settings(expected)))
    assert stream_config("s", saved, "state") == expected

    query = {**_QUERY, "anomaly_column": "n", "anomaly_by": ["status"], "anomaly_threshold": 3}
    got = _through_every_path(tmp_path, "queries", query)
    expected_query = ContinuousQueryConfig(
        stream="s",
        window="tumbling 1m",
        sql=_QUERY["sql"],
        anomaly_column="n",
        anomaly_by=("status",),
        anomaly_threshold=3.0,
    )
    assert got == [expected_query] * 3
    # The server saves a query as dataclasses.asdict (tuples become JSON lists): read back equal.
    saved = json.loads(json.dumps(dataclasses.asdict(expected_query)))
    assert continuous_query("q", saved) == expected_query


def test_ready_queries_is_the_config_files_alone() -> None:
    from loglake.config import StreamConfig, stream_config

    with pytest.raises(ConfigError, match="ready_queries is set in the config file"):
        stream_config("s", {"ready_queries": True}, "api")
    with pytest.raises(ConfigError, match="ready_queries is set in the config file"):
        stream_config("s", {"ready_queries": False}, "api")
    # Saved state written before the API's settings were saved alone holds ready_queries = false.
    assert stream_config("s", {"ready_queries": False}, "state") == StreamConfig()
    with pytest.raises(ConfigError, match="ready_queries is set in the config file"):
        stream_config("s", {"ready_queries": True}, "state")
    assert stream_config("s", {"ready_queries": True}) == StreamConfig(ready_queries=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[catalog.properties]\npool = 5\n", "catalog.properties.pool must be str, got 5"),
        ('[auth]\napi_keys = "k"\n', "auth.api_keys must be a list of strings, got 'k'"),
        ("[auth]\napi_keys = [1]\n", "auth.api_keys[0] must be str, got 1 (an integer)"),
        ('[auth]\naws_credentials = ["a"]\n', "auth.aws_credentials must be a table of strings"),
        ("[formats]\nmine = 1\n", "formats.mine must be str"),
        ('[server]\nport = "80"\n', "server.port must be int, got '80' (a string)"),
        ("[server]\nport = 70000\n", "server.port = 70000; use 0 to 65535"),
        ("[syslog]\nmax_connections = true\n", "syslog.max_connections must be int, got True"),
        ("[ingest]\nflush_rows = 1.5\n", "ingest.flush_rows must be int, got 1.5 (a number)"),
        ("[query]\ntimeout_s = false\n", "query.timeout_s must be float, got False"),
        ('[tables]\n"logs.x" = 5\n', "[tables.logs.x] must be a table of settings, got 5"),
        ("streams = 5\n", "[streams] must be a table, got 5 (an integer)"),
        ("[streams]\ns = 5\n", "[streams.s] must be a table of settings, got 5"),
        ("home = 5\n", "home must be str, got 5"),
        ('[tail.app]\npaths = "/var/log/app.log"\nstream = "s"\n', "tail.app.paths must be a list"),
        ('[tail.app]\npaths = ["a"]\nstream = "s"\npoll_seconds = 0\n', "tail.app.poll_seconds"),
        (
            '[tail.app]\npaths = ["a"]\nstream = "s"\nstart_at = true\n',
            "tail.app.start_at must be str",
        ),
        ('[tail.app]\npaths = ["a"]\nstream = "s"\nstart_at = "middle"\n', "tail.app.start_at ="),
        ("[tail.app]\npaths = []\nstream = 's'\n", "tail.app.paths is empty"),
        ('[alerts.a]\nquery = "q"\nwhen = "n > 1"\nfor_windows = 2\n', "write `for`"),
        (
            '[alerts.a]\nquery = "q"\nwhen = "n > 1"\nfor = "2"\n',
            "alerts.a.for_windows must be int",
        ),
    ],
)
def test_every_section_is_parsed_strictly(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "loglake.toml").write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_config(home=tmp_path, environ={})
    assert message in str(refused.value)


def test_source_configs_check_themselves_so_sources_can_trust_them() -> None:
    from loglake.config import SyslogConfig, TailConfig

    with pytest.raises(ConfigError, match=re.escape("tail.NAME.start_at = 'middle'")):
        TailConfig(paths=("x",), stream="s", start_at="middle")
    with pytest.raises(ConfigError, match=re.escape("tail.NAME.poll_seconds = 0")):
        TailConfig(paths=("x",), stream="s", poll_seconds=0)
    with pytest.raises(ConfigError, match=re.escape("syslog.max_message_bytes must be positive")):
        SyslogConfig(max_message_bytes=0)
    with pytest.raises(ConfigError, match=re.escape("syslog.udp = 'nonsense': missing port")):
        SyslogConfig(udp="nonsense")


def test_config_imports_no_analytics_module(tmp_path: Path) -> None:
    """The config layer is at the bottom: loading a config with queries, alerts and ready-made
    queries checks them all without importing loglake.analytics."""
    (tmp_path / "loglake.toml").write_text(
        '[streams.web]\nformat = "combined"\nready_queries = true\n'
        '[queries.hits]\nstream = "web"\nwindow = "hopping 5m every 1m"\n'
        'sql = "SELECT count(*) AS n FROM stream"\nanomaly_column = "n"\n'
        '[alerts.many]\nquery = "hits"\nwhen = "n > 100"\nfor = 2\ncooldown = "1m"\n'
    )
    code = (
        "import sys\n"
        "from loglake.config import load_config, query_spec, alert_spec\n"
        f"cfg = load_config(home={str(tmp_path)!r}, environ={{}})\n"
        "print(len(cfg.queries), query_spec(cfg, 'hits').window.slide, alert_spec(cfg, 'many').cooldown)\n"
        "print([m for m in sys.modules if m.startswith('loglake.analytics')])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    assert out == ["8 60000000 60.0", "[]"]  # 7 ready-made queries + hits


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('window = "tumbling 1x"\n', "queries.hits.window: '1x' is not a duration"),
        ('window = "hopping 5m every 2m"\n', "queries.hits.window: 'hopping 5m every 2m'"),
        ('window = "sliding 1m"\n', "queries.hits.window: 'sliding 1m' is not a window"),
        ('window = "tumbling 1m"\nkey = "client"\n', "queries.hits: key is for session windows"),
        (
            'window = "tumbling 1m"\n[alerts.a]\nquery = "hits"\nwhen = "n > 1"\ncooldown = "x"\n',
            "alerts.a.cooldown: 'x' is not a duration",
        ),
        (
            'window = "tumbling 1m"\n[alerts.a]\nquery = "hits"\nwhen = "n > 1"\nwebhook = "ftp://x"\n',
            "alerts.a.webhook = 'ftp://x' must be an http(s):// URL",
        ),
        (
            'window = "tumbling 1m"\n[alerts.a]\nquery = "nope"\nwhen = "n > 1"\n',
            "alerts.a.query 'nope' is not a [queries.NAME]",
        ),
    ],
)
def test_windows_and_alerts_are_checked_when_the_config_loads(
    tmp_path: Path, extra: str, message: str
) -> None:
    (tmp_path / "loglake.toml").write_text(
        '[queries.hits]\nstream = "web"\nsql = "SELECT count(*) AS n FROM stream"\n' + extra
    )
    with pytest.raises(ConfigError) as refused:
        load_config(home=tmp_path, environ={})
    assert message in str(refused.value)
