"""Where user SQL runs: a DuckDB sandbox with limits on time, result size and memory.

DuckDB's own ``memory_limit`` covers its buffer manager only: a value built inside one vector
(``list(range(200000000))``, ``repeat('x', 10000000)`` over a chunk of rows) is allocated outside
it and can take a process to many gigabytes before any check runs. Only the operating system can
bound that, so the sandbox's process gets ``RLIMIT_DATA`` = its size now + ``query.memory_limit`` +
room for one result: an allocation past it fails inside DuckDB as an out-of-memory error, which is
reported like any other query error.

Two ways to use it, one code path (:func:`run`):

- in a process that does nothing else (``loglake query``): :func:`open_sandbox` with
  ``bound_process=True`` limits this very process;
- anywhere else (the Python API, continuous queries in the server): :class:`Worker`, a child
  process running :func:`main`, answers one query at a time over a pipe; if it ever fails to answer
  within the time limit it is killed, and the next query starts a new one.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn

from loglake.config import parse_size as parse_size
from loglake.errors import QueryError, QueryRefusedError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

_HEADER = struct.Struct("<Q")
#: How long past the time limit a worker may take to answer before it is killed: DuckDB checks for
#: interruption between vectors, and a single huge vector can take a while.
KILL_GRACE_S = 5.0


#: What runs before a query: trusted SQL statements (view definitions), and dicts naming data files
#: DuckDB cannot read itself (on S3: it has no httpfs here) to register as an Arrow dataset under a
#: name the views read (:func:`register_files`).
Setup = list[str | dict[str, Any]]


@dataclass(frozen=True)
class Limits:
    """What one query may use: seconds, result rows, result bytes (Arrow buffers)."""

    timeout_s: float
    max_rows: int
    max_bytes: int


@dataclass(frozen=True)
class SandboxSettings:
    """How a sandbox connection is set up: the one readable folder (None: none), the files
    outside it that may be read too (users' files that tables registered in place point at),
    memory."""

    root: str | None
    memory_limit: str
    memory_bytes: int
    result_bytes: int
    paths: tuple[str, ...] = ()


def open_sandbox(settings: SandboxSettings, bound_process: bool) -> duckdb.DuckDBPyConnection:
    """A locked DuckDB connection: reads only under ``settings.root`` and exactly the files of
    ``settings.paths``, no network, no extensions, no configuration changes. With
    ``bound_process``, this process's memory is limited too."""
    import duckdb

    if bound_process:
        limit_memory(settings.memory_bytes + settings.result_bytes + (256 << 20))
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET memory_limit = $m", {"m": settings.memory_limit})
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    dirs = [settings.root.rstrip("/") + "/"] if settings.root else []
    con.execute("SET allowed_directories = $dirs", {"dirs": dirs})
    # Exact files, not their folders: a folder that holds a registered file may hold others
    # (a file the crawl left out, a writer's marker) that no table reads.
    con.execute("SET allowed_paths = $paths", {"paths": list(settings.paths)})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def limit_memory(extra: int) -> None:
    """Let this process's data segment grow by at most ``extra`` bytes more than it has now."""
    import resource

    now = _vm_data()
    if now is None:
        return  # not Linux: no /proc; DuckDB's own memory_limit is all there is
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    want = now + extra
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or want < soft:
        resource.setrlimit(resource.RLIMIT_DATA, (want, hard))


def _vm_data() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run(
    con: duckdb.DuckDBPyConnection, setup: Setup, sql: str, limits: Limits
) -> tuple[pa.Table, str | None]:
    """Run ``setup`` (trusted view definitions and file sets to register), then ``sql``; the
    rows, and why they were cut (``"rows"``/``"bytes"``) or None.

    The time limit covers the whole query, fetching included. Raises QueryError (timeouts, engine
    errors, out of memory) or QueryRefusedError (the sandbox refused a file).
    """
    import duckdb
    import pyarrow as pa

    timer = threading.Timer(limits.timeout_s, con.interrupt)
    timer.daemon = True
    try:
        for statement in setup:
            if isinstance(statement, dict):
                register_files(con, statement)
            else:
                con.execute(statement)
        timer.start()
        reader = con.sql(sql).to_arrow_reader(min(limits.max_rows + 1, 100_000))
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        cut: str | None = None
        for batch in reader:
            if rows + batch.num_rows > limits.max_rows:
                batch = batch.slice(0, limits.max_rows - rows)
                cut = "rows"
            if size + batch.nbytes > limits.max_bytes:
                batch = _fit(batch, limits.max_bytes - size)
                cut = "bytes"
            batches.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
            if cut:
                break
        return pa.Table.from_batches(batches, schema=reader.schema), cut
    except duckdb.InterruptException as exc:
        raise QueryError(
            f"query stopped after {limits.timeout_s:g} s (query.timeout_s); "
            "narrow the time range or raise the limit"
        ) from exc
    except duckdb.PermissionException as exc:
        raise QueryRefusedError(f"refused by the sandbox: {first_line(exc)}") from exc
    except duckdb.OutOfMemoryException as exc:
        raise QueryError(_memory_message()) from exc
    except MemoryError as exc:
        raise QueryError(_memory_message()) from exc
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from exc
    except pa.ArrowException as exc:
        raise QueryError(f"the result cannot be returned: {first_line(exc)}") from exc
    finally:
        timer.cancel()


def register_files(con: duckdb.DuckDBPyConnection, spec: dict[str, Any]) -> None:
    """Register Parquet files as one Arrow dataset named ``spec["name"]``, for a view to read.

    ``spec``: ``columns`` (``[name, DuckDB type]`` of the table, in order), ``files`` (``[path,
    {column: value}]``: the values of identity partitions a file registered in place lacks as
    columns), ``s3`` (keyword arguments of pyarrow's S3FileSystem, for ``s3://`` paths). Files
    are read by column name with the table's types (a column a file lacks is its partition value,
    else NULL); DuckDB pushes the query's columns and filters into the scan, and pyarrow skips
    row groups by their statistics, so a time-pruned query reads a part of each file it opens.

    This is how the engine reads S3 (a warehouse there, or Parquet crawled in place): DuckDB's
    httpfs extension is not available for the DuckDB loglake uses (docs/decisions/0015). Raises
    QueryError when the files cannot be reached.
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyarrow import fs as pafs

    from loglake.sqltext import ident

    columns = [(str(c), str(t)) for c, t in spec["columns"]]
    typed = ", ".join(f"CAST(NULL AS {t}) AS {ident(f'c{i}')}" for i, (_, t) in enumerate(columns))
    types = con.sql(f"SELECT {typed} LIMIT 0").to_arrow_table().schema.types
    schema = pa.schema([pa.field(c, t) for (c, _), t in zip(columns, types, strict=True)])
    by_scheme: dict[bool, list[tuple[str, dict[str, Any]]]] = {}
    for path, values in spec["files"]:
        by_scheme.setdefault(str(path).startswith("s3://"), []).append((str(path), values))
    parts = []
    try:
        for on_s3, files in by_scheme.items():
            fs = pafs.S3FileSystem(**spec.get("s3", {})) if on_s3 else pafs.LocalFileSystem()
            parts.append(
                ds.FileSystemDataset.from_paths(
                    [p[len("s3://") :] if on_s3 else p for p, _ in files],
                    schema=schema,
                    format=ds.ParquetFileFormat(),
                    filesystem=fs,
                    partitions=[_partition_expression(schema, v) for _, v in files],
                )
            )
        dataset = parts[0] if len(parts) == 1 else ds.dataset(parts)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise QueryError(
            f"cannot open the table's files: {first_line(exc)}; check [s3] in loglake.toml"
        ) from exc
    try:
        con.register(spec["name"], dataset)
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from exc


def _partition_expression(schema: pa.Schema, values: dict[str, Any]) -> Any:
    """``col = value AND ...`` typed as the table's columns: pyarrow fills a column a file lacks
    from its partition expression."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    expression = ds.scalar(True)
    for column, value in values.items():
        typed = pa.scalar(value).cast(schema.field(column).type)
        expression = expression & (ds.field(column) == typed)
    return expression


def _fit(batch: pa.RecordBatch, room: int) -> pa.RecordBatch:
    """The longest head of ``batch`` whose buffers take at most ``room`` bytes."""
    lo, hi = 0, batch.num_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if batch.slice(0, mid).nbytes <= room:
            lo = mid
        else:
            hi = mid - 1
    return batch.slice(0, lo)


def _memory_message() -> str:
    return (
        "the query needed more memory than query.memory_limit allows; "
        "aggregate more, select fewer or narrower columns, or raise the limit"
    )


def first_line(exc: BaseException) -> str:
    """The first line of an error message (DuckDB's later lines are advice about its settings)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- the child process ---------------------------------------------------------------------------


def _send(out: IO[bytes], payload: bytes) -> None:
    out.write(_HEADER.pack(len(payload)))
    out.write(payload)


def _receive(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def main() -> None:
    """The worker: settings in the first frame on stdin (JSON; a frame, not an argument, since the
    readable files may be many), then one request per frame until EOF."""
    import pyarrow as pa

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    first = _receive(stdin)
    if first is None:
        return
    raw = json.loads(first)
    settings = SandboxSettings(**{**raw, "paths": tuple(raw.get("paths", ()))})
    con = open_sandbox(settings, bound_process=True)
    while (raw := _receive(stdin)) is not None:
        request = json.loads(raw)
        limits = Limits(**request["limits"])
        try:
            table, cut = run(con, request["setup"], request["sql"], limits)
        except QueryError as exc:
            kind = "refused" if isinstance(exc, QueryRefusedError) else "error"
            _send(stdout, json.dumps({"error": kind, "message": str(exc)}).encode())
            stdout.flush()
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        _send(stdout, json.dumps({"cut": cut}).encode())
        _send(stdout, sink.getvalue().to_pybytes())
        stdout.flush()


class Worker:
    """A child process that runs queries in a bounded sandbox, one at a time (not thread-safe)."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            proc = self._proc = subprocess.Popen(
                [sys.executable, "-m", "loglake.query.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert proc.stdin is not None
            try:
                _send(proc.stdin, json.dumps(asdict(self.settings)).encode())
                proc.stdin.flush()
            except OSError:
                self._died(proc)
        return self._proc

    def configure(self, settings: SandboxSettings) -> None:
        """Use ``settings`` from the next query on (a sandbox's settings are locked once set,
        so a running worker is ended and the next query starts one with them)."""
        if settings != self.settings:
            self.settings = settings
            self.close()

    def run(self, setup: Setup, sql: str, limits: Limits) -> tuple[pa.Table, str | None]:
        """Like :func:`run`, in the worker; kills it when it overruns the time limit."""
        import pyarrow as pa

        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        request = {"setup": setup, "sql": sql, "limits": asdict(limits)}
        try:
            _send(proc.stdin, json.dumps(request).encode())
            proc.stdin.flush()
        except OSError:
            self._died(proc)
        answer: list[bytes | None] = []
        reader = threading.Thread(target=self._read_answer, args=(proc, answer), daemon=True)
        reader.start()
        reader.join(limits.timeout_s + KILL_GRACE_S)
        if reader.is_alive():
            self.kill()
            reader.join(5)
            raise QueryError(
                f"query stopped after {limits.timeout_s:g} s (query.timeout_s); "
                "narrow the time range or raise the limit"
            )
        if len(answer) < 1 or answer[0] is None:
            self._died(proc)
        head = json.loads(answer[0] or b"{}")
        if "error" in head:
            cls = QueryRefusedError if head["error"] == "refused" else QueryError
            raise cls(head["message"])
        if len(answer) < 2 or answer[1] is None:
            self._died(proc)
        with pa.ipc.open_stream(answer[1]) as stream:
            return stream.read_all(), head.get("cut")

    @staticmethod
    def _read_answer(proc: subprocess.Popen[bytes], answer: list[bytes | None]) -> None:
        assert proc.stdout is not None
        head = _receive(proc.stdout)
        answer.append(head)
        if head is not None and b'"error"' not in head:
            answer.append(_receive(proc.stdout))

    def _died(self, proc: subprocess.Popen[bytes]) -> NoReturn:
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self._proc = None
        raise QueryError(
            f"the query process ended (exit status {code}) before answering: the query most "
            "likely needed more memory than query.memory_limit allows; aggregate more or raise "
            "the limit"
        )

    def kill(self) -> None:
        """Stop the worker at once (the next query starts a new one)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            deadline = time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)

    def close(self) -> None:
        """End the worker: it exits when its input closes."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


if __name__ == "__main__":
    main()
