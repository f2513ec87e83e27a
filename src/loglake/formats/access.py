"""Web server access logs: Apache ``LogFormat`` and nginx ``log_format`` strings, and the usual presets.

A format string is compiled once into one anchored regular expression with a named group per field;
parsing a batch is then a handful of Polars column operations (``str.extract_groups``, ``strptime``,
casts), with no Python per line. Every format yields the same core columns (``ACCESS_COLUMNS``), null
where the format does not log a field, plus extra columns for extra fields (``vhost``, ``duration_ms``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import polars as pl

from loglake.errors import FormatError
from loglake.formats.base import LineBatch, ParseResult
from loglake.formats.scan import Program, ProgramBuilder, scan

PRESETS: dict[str, str] = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
    "vhost_common": '%v %h %l %u %t "%r" %>s %b',
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
    # Virtual host before a combined line, space-separated (Matomo's log importer calls it so).
    "common_complete": '%v %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
    # nginx's default `main` format: combined plus the X-Forwarded-For header.
    "nginx_main": (
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"'
    ),
}
ALIASES = {"combined_xff": "nginx_main", "main": "nginx_main", "clf": "common", "ncsa": "common"}

#: Core columns every access format produces, in table order, with their Polars types.
ACCESS_COLUMNS: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "client": pl.String(),
    "ident": pl.String(),
    "user": pl.String(),
    "method": pl.String(),
    "path": pl.String(),
    "query": pl.String(),
    "protocol": pl.String(),
    "status": pl.Int32(),
    "bytes": pl.Int64(),
    "referrer": pl.String(),
    "user_agent": pl.String(),
}

# Field value patterns. Quoted fields allow backslash escapes (Apache writes \" and \\ inside quotes).
_QUOTED = r'(?:[^"\\]|\\.)*'
_QUOTED_LAST = (
    r'(?:[^"\\\r\n]|\\.)*'  # the last field may lack its closing quote (seen in real logs)
)
_TOKEN = r"\S+"
_INT = r"-?\d+"
_INT_OR_DASH = r"\d+|-"
_NUM = r"\d+(?:\.\d+)?|-"
_CLF_TIME = r"\d{1,2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}"
_CLF_BRACKETED = r"\[" + "(?P<ts>" + _CLF_TIME + r")\]"  # Apache's %t: its group inside
_STATUS = r"\d{3}"
_DIGITS = r"\d+"
_ISO_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})"


@dataclass(frozen=True)
class _Field:
    """One field of a format: output column, value pattern and how the text becomes a value."""

    column: str
    pattern: str
    kind: str = "str"  # str | dash_str | int | bytes | clf_time | iso_time | epoch | request | ...
    scale: float = 1.0  # for duration kinds: factor to milliseconds


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


_HEADER_COLUMNS = {
    "referer": "referrer",
    "user_agent": "user_agent",
    "x_forwarded_for": "forwarded_for",
}


def _apache_field(directive: str, arg: str | None, has_b: bool) -> _Field:
    """Map one Apache LogFormat directive (``%h``, ``%{User-Agent}i``...) to a field."""
    if arg is not None and directive in "ioeCn":
        name = _snake(arg)
        if directive == "i":
            col = _HEADER_COLUMNS.get(name, f"req_{name}")
            dash = col in ("referrer", "user_agent", "forwarded_for")
            return _Field(col, _TOKEN, "dash_str" if dash else "str")
        prefix = {"o": "resp_", "e": "env_", "C": "cookie_", "n": "note_"}[directive]
        return _Field(prefix + name, _TOKEN)
    if directive == "t":
        if arg in (None, ""):
            return _Field("ts", _CLF_BRACKETED, "clf_time")
        if arg in ("sec", "msec", "usec"):
            scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}[arg]
            return _Field("ts", _DIGITS, "epoch", scale)
        raise FormatError(
            f"%{{{arg}}}t (custom time format) is not supported; use %t, %{{sec}}t, %{{msec}}t or "
            "%{usec}t, or log $time_iso8601 with nginx"
        )
    if directive == "p":
        return _Field("port", r"\d+|-", "int")
    table: dict[str, _Field] = {
        "h": _Field("client", _TOKEN),
        "a": _Field("client", _TOKEN),
        "A": _Field("server_ip", _TOKEN),
        "l": _Field("ident", _TOKEN, "dash_str"),
        "u": _Field("user", _TOKEN, "dash_str"),
        "r": _Field("request", _TOKEN, "request"),
        "m": _Field("method", _TOKEN),
        "U": _Field("path", r'[^\s?"]+'),
        "q": _Field("query", r"\S*", "query"),
        "H": _Field("protocol", _TOKEN),
        "s": _Field("status", _STATUS, "int"),
        "b": _Field("bytes", _INT_OR_DASH, "int"),
        "B": _Field("bytes", _INT_OR_DASH, "int"),
        "O": _Field("bytes_sent" if has_b else "bytes", _INT_OR_DASH, "int"),
        "I": _Field("bytes_received", _INT_OR_DASH, "int"),
        "S": _Field("bytes_transferred", _INT_OR_DASH, "int"),
        "D": _Field("duration_ms", _INT_OR_DASH, "duration", 1e-3),
        "T": _Field("duration_ms", _INT_OR_DASH, "duration", 1e3),
        "v": _Field("vhost", _TOKEN),
        "V": _Field("vhost", _TOKEN),
        "P": _Field("pid", _INT_OR_DASH, "int"),
        "k": _Field("keepalive_requests", _INT_OR_DASH, "int"),
        "L": _Field("log_id", _TOKEN, "dash_str"),
        "X": _Field("connection_status", _TOKEN),
        "f": _Field("filename", _TOKEN),
        "R": _Field("handler", _TOKEN),
    }
    if directive not in table:
        raise FormatError(f"LogFormat directive %{directive} is not supported")
    return table[directive]


_NGINX_VARS: dict[str, _Field] = {
    "remote_addr": _Field("client", _TOKEN),
    "realip_remote_addr": _Field("client", _TOKEN),
    "remote_user": _Field("user", _TOKEN, "dash_str"),
    "time_local": _Field("ts", _CLF_TIME, "clf_time"),
    "time_iso8601": _Field("ts", _ISO_TIME, "iso_time"),
    "msec": _Field("ts", r"\d+(?:\.\d+)?", "epoch"),
    "request": _Field("request", _TOKEN, "request"),
    "status": _Field("status", _STATUS, "int"),
    "body_bytes_sent": _Field("bytes", _INT_OR_DASH, "int"),
    "request_length": _Field("bytes_received", _INT_OR_DASH, "int"),
    "request_time": _Field("duration_ms", _NUM, "duration", 1e3),
    "upstream_response_time": _Field("upstream_response_time", _TOKEN, "dash_str"),
    "host": _Field("vhost", _TOKEN),
    "server_name": _Field("vhost", _TOKEN),
    "server_port": _Field("port", r"\d+|-", "int"),
    "remote_port": _Field("client_port", r"\d+|-", "int"),
    "request_method": _Field("method", _TOKEN),
    "request_uri": _Field("target", _TOKEN, "target"),
    "uri": _Field("path", r'[^\s?"]+'),
    "args": _Field("query", r"\S*", "dash_str"),
    "query_string": _Field("query", r"\S*", "dash_str"),
    "server_protocol": _Field("protocol", _TOKEN),
    "connection": _Field("connection", _DIGITS, "int"),
    "connection_requests": _Field("connection_requests", _DIGITS, "int"),
    "pid": _Field("pid", _DIGITS, "int"),
}


def _nginx_field(var: str, has_body_bytes: bool) -> _Field:
    if var == "bytes_sent":
        return _Field("bytes_sent" if has_body_bytes else "bytes", _INT_OR_DASH, "int")
    if var in _NGINX_VARS:
        return _NGINX_VARS[var]
    if var.startswith("http_"):
        name = var[5:]
        col = _HEADER_COLUMNS.get(name, f"req_{name}")
        dash = col in ("referrer", "user_agent", "forwarded_for")
        return _Field(col, _TOKEN, "dash_str" if dash else "str")
    if var.startswith("sent_http_"):
        return _Field(f"resp_{var[10:]}", _TOKEN, "dash_str")
    return _Field(_snake(var), _TOKEN, "dash_str")


_APACHE_TOKEN = re.compile(r"%(?:[<>!0-9,]*)(?:\{([^}]*)\})?(?:[<>])?([a-zA-Z%])")
_NGINX_TOKEN = re.compile(r"\$(?:\{([a-zA-Z0-9_]+)\}|([a-zA-Z0-9_]+))")


_FAST_QUOTED = r'[^"\\]*'
_FAST_QUOTED_LAST = r'[^"\\\r\n]*'
# The common shape of a request line, split by the regex itself on the fast path.
_FAST_REQUEST = (
    r'(?P<method>[A-Z]+) (?P<path>[^ "?\\]*)(?:\?(?P<query>[^ "\\]*))? (?P<protocol>HTTP/[0-9.]+)'
)
_QUOTED_PATTERNS = (_QUOTED, _QUOTED_LAST)
# A text field between brackets (`[$proxy_alternative_upstream_name]`) may be empty: `[]`.
_BRACKETED = r"[^\]]*"
# The field patterns the line scanner has an op for (formats/scan.py); others leave it to the regex.
_SCAN_OPS: dict[str, str] = {
    _TOKEN: "token",
    _STATUS: "int3",
    _INT_OR_DASH: "digits_dash",
    _DIGITS: "digits",
    _CLF_TIME: "clf",
    _CLF_BRACKETED: "clf_bracketed",
    _FAST_QUOTED: "quoted",
    _FAST_QUOTED_LAST: "quoted_last",
}


def _compile(parts: list[str | _Field], fast: bool = False) -> tuple[str, list[_Field], Program]:
    """Join literal text and fields into one anchored regex; fields in quotes take the quoted pattern.

    ``fast`` builds the fast-path variant: quoted fields without backslash escapes and a request line
    of the usual ``METHOD PATH[?QUERY] HTTP/x`` shape, split into its parts by the regex itself. Lines
    it does not match are tried against the general variant, which accepts anything the server writes.
    With ``fast``, also the scanner program that accepts (a subset of) what the fast regex accepts and
    splits it the same way (None when a field has no scanner op: the regex does all the work).
    """
    out: list[str] = ["^"]
    fields: list[_Field] = []
    seen: set[str] = set()
    program = ProgramBuilder() if fast else None
    for i, part in enumerate(parts):
        if isinstance(part, str):
            out.append(re.escape(part))
            if program is not None:
                program.literal(part)
            continue
        prev = parts[i - 1] if i > 0 else ""
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        quoted = isinstance(prev, str) and prev.endswith('"') and isinstance(nxt, str)
        quoted = quoted and isinstance(nxt, str) and nxt.startswith('"')
        is_last = i + 2 >= len(parts) and nxt == '"'
        pattern = part.pattern
        bracketed = isinstance(prev, str) and prev.endswith("[")
        if bracketed and isinstance(nxt, str) and nxt.startswith("]") and pattern == _TOKEN:
            pattern = _BRACKETED
            part = _Field(part.column, pattern, part.kind, part.scale)
        if quoted:
            if fast:
                pattern = _FAST_QUOTED_LAST if is_last else _FAST_QUOTED
            else:
                pattern = _QUOTED_LAST if is_last else _QUOTED
        column = part.column
        following = nxt if isinstance(nxt, str) else None
        if column in seen:  # the same field logged twice: keep the first, match the rest
            out.append(f"(?:{pattern})")
            if program is not None:
                program.field(_SCAN_OPS.get(pattern), None, following)
            continue
        seen.add(column)
        if fast and part.kind == "request" and quoted:
            out.append(_FAST_REQUEST)
            if program is not None:
                program.request(len(fields))
            fields.extend(
                _Field(c, _FAST_QUOTED, k)
                for c, k in (
                    ("method", "str"),
                    ("path", "str"),
                    ("query", "str"),
                    ("protocol", "str"),
                )
            )
            continue
        if program is not None:
            program.field(_SCAN_OPS.get(pattern), len(fields), following)
        fields.append(_Field(column, pattern, part.kind, part.scale) if quoted else part)
        if part.kind == "clf_time" and pattern.startswith(r"\["):
            out.append(pattern)  # %t carries its brackets and names its own group
        else:
            out.append(f"(?P<{column}>{pattern})")
    if len(parts) >= 2 and parts[-1] == '"' and isinstance(parts[-2], _Field):
        out[-1] = '"?'  # tolerate a missing closing quote on the last field
        if program is not None:
            program.optional_last_quote()
    out.append("$")
    return "".join(out), fields, program.build() if program is not None else None


def _parse_apache(fmt: str) -> list[str | _Field]:
    has_b = bool(re.search(r"%[<>]?b|%[<>]?B", fmt))
    parts: list[str | _Field] = []
    pos = 0
    for m in _APACHE_TOKEN.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos : m.start()])
        arg, directive = m.group(1), m.group(2)
        if directive == "%":
            parts.append("%")
        else:
            parts.append(_apache_field(directive, arg, has_b))
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    return _merge_literals(parts)


def _parse_nginx(fmt: str) -> list[str | _Field]:
    has_body = "$body_bytes_sent" in fmt
    parts: list[str | _Field] = []
    pos = 0
    for m in _NGINX_TOKEN.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos : m.start()])
        parts.append(_nginx_field(m.group(1) or m.group(2), has_body))
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    return _merge_literals(parts)


def _merge_literals(parts: list[str | _Field]) -> list[str | _Field]:
    merged: list[str | _Field] = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    # Apache configs write \" for a quote inside the LogFormat string.
    return [p.replace('\\"', '"') if isinstance(p, str) else p for p in merged]


_REQUEST_PARTS = ("method", "path", "query", "protocol")
_REQUEST_RE = (
    r"^(?P<method>[A-Za-z][A-Za-z0-9_-]*) (?P<target>.*?)"
    r"(?: (?P<protocol>[A-Za-z]+/\d+(?:\.\d+)?))?$"
)


@dataclass
class AccessFormat:
    """An access-log format compiled from an Apache ``LogFormat`` or nginx ``log_format`` string."""

    name: str
    format_string: str
    regex: str = field(init=False)
    fields: list[_Field] = field(init=False)
    fast_regex: str = field(init=False)
    fast_fields: list[_Field] = field(init=False)
    program: Program = field(init=False)  # the fast path's scanner program, None: regex only
    default_table: ClassVar[str] = "logs.access"
    enrich: ClassVar[tuple[str, ...]] = ("useragent",)

    def __post_init__(self) -> None:
        fmt = self.format_string
        is_nginx = "$" in fmt and not re.search(r"%[<>]?[a-zA-Z{]", fmt)
        parts = _parse_nginx(fmt) if is_nginx else _parse_apache(fmt)
        if not any(isinstance(p, _Field) for p in parts):
            raise FormatError(
                f"format {fmt!r} has no fields; give an Apache LogFormat (%h %t ...) or an nginx "
                "log_format ($remote_addr [$time_local] ...) string"
            )
        self.regex, self.fields, _ = _compile(parts)
        self.fast_regex, self.fast_fields, self.program = _compile(parts, fast=True)
        columns = {f.column for f in self.fields}
        if not columns & {"ts"}:
            raise FormatError(
                f"format {fmt!r} logs no time (%t, $time_local, $time_iso8601 or $msec); loglake "
                "needs the event time of each line"
            )
        try:
            re.compile(self.regex)
        except re.error as exc:  # pragma: no cover - our own construction
            raise FormatError(f"format {fmt!r} compiles to an invalid pattern: {exc}") from exc

    # -- parsing -------------------------------------------------------------------------------

    def match_rate(self, sample: pl.Series) -> float:
        if len(sample) == 0:
            return 0.0
        return float(sample.str.contains(self.regex).cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]

    def parse(self, batch: LineBatch) -> ParseResult:
        text = batch.text
        every = line_no = batch.line_numbers()
        frames: list[pl.DataFrame] = []
        # The scanner first (formats/scan.py): the lines it accepts skip the regexes; the others
        # (and all lines, where it cannot run) take the regex paths below, as before.
        scanned = self._scan(batch, line_no)
        if scanned is not None:
            frame, accepted = scanned
            frames.append(frame)
            text, line_no = text.filter(~accepted), line_no.filter(~accepted)
        # One streaming query (the engine runs it over morsels of the batch on all cores): extract
        # the fields and convert them in the same pass; unmatched rows are all-null and dropped.
        first = self.fast_fields[0].column
        ok = pl.Series("__ok", [], pl.Boolean)
        if len(text) or not frames:  # (an empty batch still gives the frame's columns)
            fast = (
                pl.LazyFrame({"line": line_no, "text": text})
                .select("line", pl.col("text").str.extract_groups(self.fast_regex).alias("g"))
                .unnest("g")
                .with_columns(
                    pl.col(first).is_not_null().alias("__ok"),
                    *self._convert_exprs(self.fast_fields),
                )
                .collect(engine="streaming")
            )
            ok = fast.get_column("__ok")
            frames.append(fast.filter(ok).drop("__ok"))
        unmatched = pl.Series("line", [], pl.Int64)
        if not ok.all():
            # The general path: escaped quotes, odd request lines, a missing closing quote...
            rest_lines = line_no.filter(~ok)
            slow = text.filter(~ok).str.extract_groups(self.regex).struct.unnest()
            ok2 = slow.get_column(self.fields[0].column).is_not_null()
            unmatched = rest_lines.filter(~ok2)
            general = slow.with_columns(line=rest_lines).filter(ok2)
            general = general.lazy().with_columns(self._convert_exprs(self.fields)).collect()
            frames.append(self._split_request(general))
        frame = self._finish(pl.concat(frames, how="diagonal_relaxed"))
        bad_ts = frame.get_column("ts").is_null()
        bad_lines = frame.get_column("line").filter(bad_ts)
        if len(bad_lines):
            frame = frame.filter(~bad_ts)
        if sum(f.height > 0 for f in frames) > 1:
            frame = frame.sort("line")
        if len(unmatched) == 0 and len(bad_lines) == 0:
            return ParseResult(parsed=frame, rejected=batch.rejected(None, pl.lit("")))
        reasons = (
            pl.when(pl.col("text").str.len_bytes() == 0)
            .then(pl.lit("empty line"))
            .when(pl.col("line").is_in(bad_lines.implode()))
            .then(pl.lit("invalid timestamp"))
            .otherwise(pl.lit(f"does not match the {self.name} format"))
        )
        mask = every.is_in(unmatched.implode()) | every.is_in(bad_lines.implode())
        return ParseResult(parsed=frame, rejected=batch.rejected(mask, reasons))

    def _scan(self, batch: LineBatch, line_no: pl.Series) -> tuple[pl.DataFrame, pl.Series] | None:
        """The lines the scanner accepts, their fields converted as the fast path converts them,
        and the mask of those lines; None when the format has no program or it cannot run."""
        if self.program is None:
            return None
        found = scan(self.program, [f.column for f in self.fast_fields], batch.raw)
        if found is None:
            return None
        fields, accepted = found
        frame = (
            fields.with_columns(line_no)
            .filter(accepted)
            .lazy()
            .with_columns(self._convert_exprs(self.fast_fields))
            .collect()
        )
        return frame, accepted

    def _convert_exprs(self, fields: list[_Field]) -> list[pl.Expr]:
        exprs: list[pl.Expr] = []
        for f in fields:
            col = pl.col(f.column)
            if f.pattern in _QUOTED_PATTERNS:
                # Undo the server's escaping of quotes and backslashes; \xNN escapes stay as text.
                col = col.str.replace_all(r'\\(["\\])', "$1")
            quoted = f.pattern in (*_QUOTED_PATTERNS, _FAST_QUOTED, _FAST_QUOTED_LAST)
            if f.pattern == _BRACKETED:
                col = pl.when(col.is_in(["", "-"])).then(None).otherwise(col)
            elif f.kind == "dash_str" or (
                quoted and f.kind == "str" and f.column not in _REQUEST_PARTS
            ):
                col = pl.when(col == "-").then(None).otherwise(col)
            elif f.kind == "int":
                col = col.cast(pl.Int64, strict=False)
            elif f.kind == "duration":
                col = (col.cast(pl.Float64, strict=False) * f.scale).alias(f.column)
            elif f.kind == "clf_time":
                col = col.str.strptime(
                    pl.Datetime("us", "UTC"), "%d/%b/%Y:%H:%M:%S %z", strict=False
                )
            elif f.kind == "iso_time":
                col = col.str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
            elif f.kind == "epoch":
                col = (col.cast(pl.Float64, strict=False) * (f.scale * 1e6)).cast(pl.Int64)
                col = col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            elif f.kind == "query":
                col = pl.when(col == "").then(None).otherwise(col.str.strip_prefix("?"))
            exprs.append(col.alias(f.column))
        return exprs

    def _split_request(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Split ``request`` (general path) into method, path, query and protocol."""
        if "request" in frame.columns:
            req = frame.get_column("request")
            parts = req.str.extract_groups(_REQUEST_RE).struct.unnest()
            unsplit = parts.get_column("method").is_null() & ~req.is_in(["", "-"])
            # A request that is not METHOD TARGET [PROTOCOL] (e.g. TLS bytes sent to an HTTP port)
            # keeps its raw text in `path`, so nothing the server logged is lost.
            target = pl.select(pl.when(unsplit).then(req).otherwise(parts.get_column("target")))
            frame = frame.with_columns(
                method=parts.get_column("method"),
                protocol=parts.get_column("protocol"),
                target=target.to_series(),
            ).drop("request")
        if "target" in frame.columns:
            t = pl.col("target")
            is_raw = pl.col("method").is_null() if "method" in frame.columns else pl.lit(False)
            split = t.str.splitn("?", 2)
            frame = frame.with_columns(
                path=pl.when(is_raw).then(t).otherwise(split.struct.field("field_0")),
                query=pl.when(is_raw).then(None).otherwise(split.struct.field("field_1")),
            ).drop("target")
        return frame

    def _finish(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Order and type the columns: core columns first (null when not logged), then extras."""
        exprs = []
        for name, dtype in ACCESS_COLUMNS.items():
            if name in frame.columns:
                exprs.append(pl.col(name).cast(dtype))
            else:
                exprs.append(pl.lit(None, dtype=dtype).alias(name))
        extras = [c for c in frame.columns if c not in ACCESS_COLUMNS and c != "line"]
        return frame.select(*exprs, *extras, pl.col("line"))


def access_format(spec: str, **_options: object) -> AccessFormat:
    """The access format for a preset name or an Apache/nginx format string."""
    name = ALIASES.get(spec, spec)
    if name in PRESETS:
        return AccessFormat(name, PRESETS[name])
    if "%" in spec or "$" in spec:
        return AccessFormat("custom", spec)
    raise FormatError(f"unknown access format {spec!r}; presets: {', '.join(PRESETS)}")
