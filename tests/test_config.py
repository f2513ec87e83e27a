"""Configuration: defaults, TOML file, environment; unknown keys are errors that name the fix."""

from __future__ import annotations

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
