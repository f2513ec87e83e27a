"""Conforming parsed rows to a table: the one step between every format and the lake.

Batch ingest and stream delivery both hand every parsed frame to :func:`conform` (through
:meth:`loglake.lake.writer.TableWriter.add`) with the table's current columns. It returns the rows
that fit, in the table's column names and types (columns the table lacks are kept, for schema
evolution), and a reason for every row that cannot be stored. A value is converted only when that
loses nothing; otherwise its record is refused with a reason naming the column, the value's type
and the column's type, and the caller keeps the raw line in ``logs.rejected``: the way Elasticsearch
refuses a document with ``mapper_parsing_exception`` instead of stalling the index.

The rules (documented for users in docs/formats.md, "Column types and names"):

* Column names are case-insensitive, as in Athena, Glue and DuckDB: ``IP`` goes into an existing
  column ``ip``; of spellings new to the table the first one in the frame names the column. A
  record holding two spellings with different non-null values is refused (equal values, or one
  null, are merged). The same holds for the members of objects, at every depth.
* Into a text column anything fits: strings as themselves, other values as compact JSON text.
* Into a number column: numbers that fit exactly, and strings holding such a number; a float with
  a fraction is not truncated into an integer column, an integer beyond 2**53 is not rounded into
  a float column, booleans are not numbers.
* Into a boolean column: booleans, and the strings ``true`` / ``false``.
* Into an object or array column: objects (arrays) member by member (element by element) with
  these same rules, and strings holding their JSON text (what the JSON format makes of a key whose
  values had mixed types within one batch).
* Into a timestamp column: timestamps, dates and ISO 8601 strings.
* New columns: the types a table cannot hold become storable (all-null -> text, integers beyond
  64 bits -> text, unsigned -> signed); an object with no members (``{}``) has no value a column
  can hold, so until its key brings members it is stored as null (Elasticsearch maps nothing for
  it either); a new column named like one of the table's partition fields gets ``_raw`` appended.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from loglake.errors import LakeError

if TYPE_CHECKING:
    import pyarrow as pa
    from polars._typing import PolarsDataType

#: Characters of a refused value shown in its reason (the whole line is in ``raw``).
PREVIEW_CHARS = 60
_INT53 = 2**53  # integers beyond this magnitude are not all exact in a double


@dataclass(frozen=True)
class Conformed:
    """What :func:`conform` gives back.

    ``rows``: the rows that fit, with the table's column names and types (plus columns and object
    members the table does not have yet); ``refused``: one boolean per input row, True for rows
    that cannot be stored; ``reasons``: one string per input row, why (null where the row fits).
    """

    rows: pl.DataFrame
    refused: pl.Series
    reasons: pl.Series


def table_columns(schema: pa.Schema) -> dict[str, pl.DataType]:
    """A table's Arrow schema as ``{column: Polars type}``, in table order."""
    empty = pl.from_arrow(schema.empty_table())
    assert isinstance(empty, pl.DataFrame)
    return dict(empty.schema.items())


def conform(
    frame: pl.DataFrame,
    columns: Mapping[str, PolarsDataType],
    reserved: Collection[str] = (),
) -> Conformed:
    """The rows of ``frame`` that fit a table with ``columns``, and why the others do not.

    ``columns`` are the table's current columns (an empty mapping for a table that does not exist
    yet); ``reserved`` are names a new column may not take (the table's partition fields). Never
    raises for the data itself: every row either fits or is refused with a reason.
    """
    known = _by_lower(columns)
    frame, nul_reasons = _without_nul_members(frame)
    if nul_reasons is None and _fits_as_is(frame, columns, known):
        return Conformed(frame, _repeat(False, frame.height), _nulls(frame.height))
    groups = _groups(frame.columns)
    taken = set(groups)
    blocked = {name.lower() for name in reserved}
    out: list[pl.Series] = []
    reasons: pl.Series | None = nul_reasons
    for lower, spellings in groups.items():
        name = known.get(lower, spellings[0])
        target = columns.get(name)
        if target is None and lower in blocked:
            # As the JSON format does with its reserved keys: `<key>_raw`, which may be a
            # column already (the earlier values of this key).
            name += "_raw"
            while name.lower() in taken or name.lower() in blocked:
                name += "_raw"
            taken.add(name.lower())
            name = known.get(name.lower(), name)
            target = columns.get(name)
        if target is None and "\x00" in name:
            fitted, why = _nameless([frame.get_column(s) for s in spellings], name)
        else:
            fitted, why = _merge([frame.get_column(s) for s in spellings], target, name)
        reasons = _first_reason(reasons, why)
        if fitted is not None:
            out.append(fitted.alias(name))
    if reasons is None:
        return Conformed(pl.DataFrame(out), _repeat(False, frame.height), _nulls(frame.height))
    refused = reasons.is_not_null().alias("refused")
    return Conformed(pl.DataFrame(out).filter(~refused), refused, reasons.alias("reason"))


def _fits_as_is(
    frame: pl.DataFrame, columns: Mapping[str, PolarsDataType], known: dict[str, str]
) -> bool:
    """The common case, checked cheaply: known columns of the same types, spelled as in the table."""
    return (
        all(
            columns.get(name) == dtype and known[name.lower()] == name
            for name, dtype in frame.schema.items()
        )
        and len({c.lower() for c in frame.columns}) == frame.width
    )


def _by_lower(names: Collection[str]) -> dict[str, str]:
    """``{lowercase: spelling}``; of several spellings the first one wins."""
    out: dict[str, str] = {}
    for name in names:
        out.setdefault(name.lower(), name)
    return out


def _groups(names: list[str]) -> dict[str, list[str]]:
    """Names grouped by their lowercase form, groups and members in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.lower(), []).append(name)
    return groups


def _first_reason(a: pl.Series | None, b: pl.Series | None) -> pl.Series | None:
    if a is None:
        return b
    if b is None:
        return a
    return a.fill_null(b)


def _nulls(n: int, dtype: PolarsDataType = pl.String, name: str = "") -> pl.Series:
    return pl.repeat(None, n, dtype=dtype, eager=True).alias(name)


def _repeat(value: bool, n: int) -> pl.Series:
    return pl.repeat(value, n, dtype=pl.Boolean, eager=True).alias("refused")


def _keep(values: pl.Series, mask: pl.Series) -> pl.Series:
    """``values`` where ``mask`` is True, null elsewhere."""
    return values.zip_with(mask.fill_null(False), _nulls(len(values), values.dtype))


# -- one column ----------------------------------------------------------------------------------

_Fit = tuple[pl.Series | None, pl.Series | None]  # (values or None: nothing storable, reasons)


def _fit(s: pl.Series, target: PolarsDataType | None, path: str) -> _Fit:
    """``s`` as ``target`` (None: a column new to the table), with reasons for values that do not
    fit (None when all fit). Values of refused rows may be anything."""
    if target is None:
        return _new(s, path)
    if s.dtype == target:
        return s, None
    if isinstance(target, pl.Struct):
        return _fit_struct(s, target, path)
    if isinstance(target, pl.List):
        return _fit_list(s, target, path)
    return _fit_scalar(s, target, path)


def _has_nul_name(dtype: PolarsDataType) -> bool:
    if isinstance(dtype, pl.Struct):
        return any("\x00" in f.name or _has_nul_name(f.dtype) for f in dtype.fields)
    if isinstance(dtype, pl.List | pl.Array):
        return _has_nul_name(dtype.inner)
    return False


def _without_nul_members(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series | None]:
    """Object members whose key holds a NUL character (no Arrow, Parquet or SQL name can) taken
    out of nested columns: rows with a value under such a key are refused, the others keep the
    rest of their values. Rare, so done value by value, and only for columns that have one."""
    names = [n for n, dtype in frame.schema.items() if _has_nul_name(dtype)]
    if not names:
        return frame, None
    reasons: list[str | None] = [None] * frame.height
    cleaned = {}
    for name in names:
        values = []
        for row, value in enumerate(frame.get_column(name).to_list()):
            bad: list[str] = []
            values.append(_drop_nul_keys(value, name, bad))
            if bad and reasons[row] is None:
                shown = bad[0].replace("\x00", "\\u0000")
                reasons[row] = (
                    f'key "{shown}" contains a NUL character, which no column name can hold'
                )
        cleaned[name] = pl.Series(name, values, strict=False)
    return frame.with_columns(**cleaned), pl.Series("reason", reasons, dtype=pl.String)


def _drop_nul_keys(value: Any, path: str, bad: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, member in value.items():
            if "\x00" in key:
                if member is not None:
                    bad.append(f"{path}.{key}")
                continue
            out[key] = _drop_nul_keys(member, f"{path}.{key}", bad)
        return out
    if isinstance(value, list):
        return [_drop_nul_keys(v, f"{path}[]", bad) for v in value]
    return value


def _nameless(variants: list[pl.Series], path: str) -> _Fit:
    """A key no column can be named after (it holds a NUL character: Arrow, Parquet and SQL names
    cannot): the rows that have a value for it are refused, nothing is stored for it."""
    present = variants[0].is_not_null()
    for other in variants[1:]:
        present = present | other.is_not_null()
    shown = path.replace("\x00", "\\u0000")
    text = f'key "{shown}" contains a NUL character, which no column name can hold'
    return None, pl.Series("reason", [text if p else None for p in present], dtype=pl.String)


def _new(s: pl.Series, path: str) -> _Fit:
    """A column (or object member) the table does not have yet, in a type it can store."""
    dtype = s.dtype
    if _storable(dtype):
        return s, None
    if isinstance(dtype, pl.Struct):
        return _fit_struct(s, None, path)
    if isinstance(dtype, pl.List | pl.Array):
        return _fit_list(s, None, path)
    if dtype == pl.Null or isinstance(dtype, pl.Categorical | pl.Enum):
        return s.cast(pl.String), None
    if dtype in (pl.Int128, pl.UInt128):
        return text(s), None
    if dtype == pl.UInt64:
        signed = s.cast(pl.Int64, strict=False)
        return (signed, None) if signed.null_count() == s.null_count() else (text(s), None)
    if dtype in (pl.UInt8, pl.UInt16, pl.UInt32):
        return s.cast(pl.Int64), None
    return s, None


_UNSTORABLE = (pl.Null, pl.Int128, pl.UInt128, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _storable(dtype: PolarsDataType) -> bool:
    """Whether a new column of ``dtype`` can be stored as it is: no type a table cannot hold, no
    empty object, no object members whose names differ only in case or hold a NUL character
    (checked at every depth)."""
    if isinstance(dtype, pl.Struct):
        names = {f.name.lower() for f in dtype.fields}
        return (
            bool(dtype.fields)
            and len(names) == len(dtype.fields)
            and not any("\x00" in f.name for f in dtype.fields)
            and all(_storable(f.dtype) for f in dtype.fields)
        )
    if isinstance(dtype, pl.List):
        return _storable(dtype.inner)
    if isinstance(dtype, pl.Array | pl.Categorical | pl.Enum):
        return False
    return dtype not in _UNSTORABLE


def _merge(variants: list[pl.Series], target: PolarsDataType | None, path: str) -> _Fit:
    """One column from the spellings of one name that differ only in case (usually just one)."""
    if len(variants) == 1:
        return _fit(variants[0], target, path)
    fitted: list[pl.Series] = []
    spellings: list[str] = []
    reasons: pl.Series | None = None
    for variant in variants:
        values, why = _fit(variant, target, path)
        reasons = _first_reason(reasons, why)
        if values is not None:
            fitted.append(values)
            spellings.append(variant.name)
    if not fitted:
        return None, reasons
    common: PolarsDataType = fitted[0].dtype
    for values in fitted[1:]:
        common = union_type(common, values.dtype) or pl.String()
    names = [f"v{i}" for i in range(len(fitted))]
    unified: list[pl.Series] = []
    for values, name in zip(fitted, names, strict=True):
        if values.dtype != common:
            values, why = _fit(values, common, path)
            reasons = _first_reason(reasons, why)
            assert values is not None  # a known type always gives values
            values = reshape(values, common)
        unified.append(values.alias(name))
    both = pl.DataFrame(unified)
    merged = both.select(pl.coalesce(names)).to_series()
    clash = pl.lit(False)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = pl.col(first), pl.col(second)
            clash = clash | (a.is_not_null() & b.is_not_null() & a.ne_missing(b))
    clashes = both.select(clash).to_series()
    if clashes.any():
        # Name the spellings each refused record holds (others may come from other records).
        where = f"in {path.rsplit('.', 1)[0]}: " if "." in path else ""
        rows = clashes.arg_true()
        held = both.select(pl.col(names).is_not_null()).to_numpy()[rows.to_numpy()]
        texts = [
            f"{where}keys "
            + " and ".join(f'"{n}"' for n, has in zip(spellings, row, strict=True) if has)
            + " differ only in case and hold different values (column names are case-insensitive)"
            for row in held
        ]
        reasons = _first_reason(reasons, _nulls(len(merged)).scatter(rows, texts))
    return merged, reasons


def _fit_struct(s: pl.Series, target: pl.Struct | None, path: str) -> _Fit:
    """Objects member by member (members matched case-insensitively); ``target`` None: new."""
    if not isinstance(s.dtype, pl.Struct):
        if target is not None and s.dtype == pl.String:
            return _from_json_text(s, target, path)
        return _misfit_all(s, target, path)
    fields = s.struct.unnest()
    wanted = {f.name: f.dtype for f in target.fields} if target is not None else {}
    known = _by_lower(wanted)
    built: dict[str, pl.Series] = {}
    reasons: pl.Series | None = None
    for lower, spellings in _groups(fields.columns).items():
        name = known.get(lower, spellings[0])
        variants = [fields.get_column(n) for n in spellings]
        if name not in wanted and "\x00" in name:
            values, why = _nameless(variants, f"{path}.{name}")
        else:
            values, why = _merge(variants, wanted.get(name), f"{path}.{name}")
        reasons = _first_reason(reasons, why)
        if values is not None:
            built[name] = values
    if target is None and not built:
        return None, reasons  # only members without a storable value ({}): nothing to keep
    members = [
        built.pop(name).alias(name) if name in built else _nulls(len(s), dtype, name)
        for name, dtype in wanted.items()
    ]
    members += [values.alias(name) for name, values in built.items()]
    return _struct(members, s.is_null(), s.name), reasons


def _struct(members: list[pl.Series], nulls: pl.Series, name: str) -> pl.Series:
    """A struct column of ``members``, null where ``nulls`` is True."""
    import pyarrow as pa

    arrays = [_arrow(m) for m in members]
    mask = _arrow(nulls) if nulls.any() else None
    array = pa.StructArray.from_arrays(arrays, names=[m.name for m in members], mask=mask)
    return pl.Series(name, array)


def _arrow(s: pl.Series) -> pa.Array:
    import pyarrow as pa

    array = s.rechunk().to_arrow()
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _relist(array: pa.Array, elements: pl.Series, name: str) -> pl.Series:
    """``array`` (a list array) with its elements replaced by ``elements``, row for row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(array), 0).cast(pa.int64())
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(lengths)])
    mask = pc.is_null(array) if array.null_count else None
    return pl.Series(name, pa.LargeListArray.from_arrays(offsets, _arrow(elements), mask=mask))


def _fit_list(s: pl.Series, target: pl.List | None, path: str) -> _Fit:
    """Arrays element by element; ``target`` None: a new column."""
    import pyarrow.compute as pc

    if isinstance(s.dtype, pl.Array):
        s = s.cast(pl.List(s.dtype.inner))
    if not isinstance(s.dtype, pl.List):
        if target is not None and s.dtype == pl.String:
            return _from_json_text(s, target, path)
        return _misfit_all(s, target, path)
    array = _arrow(s)
    flat = array.flatten()
    inner = pl.Series("element", flat) if len(flat) else _nulls(0, s.dtype.inner, "element")
    values, why = _fit(inner, target.inner if target is not None else None, f"{path}[]")
    reasons = _rows_of(why, pc.list_parent_indices(array), len(s))
    if values is None:
        return None, reasons  # arrays of empty objects only: nothing storable yet
    return _relist(array, values, s.name), reasons


def _rows_of(why: pl.Series | None, parents: pa.Array, rows: int) -> pl.Series | None:
    """Reasons of list elements as reasons of the rows holding them (the first one per row)."""
    if why is None or why.null_count() == len(why):
        return None
    bad = (
        pl.DataFrame({"row": pl.Series(parents).cast(pl.Int64), "why": why})
        .filter(pl.col("why").is_not_null())
        .group_by("row", maintain_order=True)
        .first()
    )
    return _nulls(rows).scatter(bad.get_column("row"), bad.get_column("why"))


_DECODE_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException)


def _from_json_text(s: pl.Series, target: pl.Struct | pl.List, path: str) -> _Fit:
    """Text holding JSON objects (arrays) into an object (array) column, value by value."""
    present = s.is_not_null()
    where = present.arg_true()
    texts = s.filter(present)
    reasons = _nulls(len(s))
    try:
        decoded: pl.Series | None = texts.str.json_decode(infer_schema_length=None)
    except _DECODE_ERRORS:
        decoded = None
    if decoded is not None and decoded.dtype != pl.String:
        values, why = _fit(decoded, target, path)
        assert values is not None
        if why is not None:
            reasons = reasons.scatter(where, why)
    else:  # one value at a time: the rare batch mixing JSON text with plain strings
        parts: list[pl.Series] = []
        kept: list[int] = []
        for pos, value in zip(where.to_list(), texts.to_list(), strict=True):
            try:
                one = pl.Series([value]).str.json_decode(infer_schema_length=None)
            except _DECODE_ERRORS:
                one = pl.Series([value])
            fitted, why = (None, None) if one.dtype == pl.String else _fit(one, target, path)
            if fitted is None:
                why = _drift_reason(pl.Series([value]), target, path, pl.Series([True]))
            if why is not None and why[0] is not None:
                reasons[pos] = why[0]
                continue
            assert fitted is not None
            parts.append(fitted)
            kept.append(pos)
        values = (
            pl.concat([p.to_frame("v") for p in parts], how="vertical_relaxed").to_series()
            if parts
            else _nulls(0, target)
        )
        where = pl.Series(kept, dtype=pl.Int64)
    # Back to one value per row: row i takes the value decoded from it, null where it had none.
    index = _nulls(len(s), pl.Int64).scatter(where, pl.int_range(0, len(where), eager=True))
    taken = _arrow(values).take(_arrow(index))
    found = reasons if reasons.null_count() < len(s) else None
    return pl.Series(s.name, taken), found


def _fit_scalar(s: pl.Series, target: PolarsDataType, path: str) -> _Fit:
    """A single value into a scalar column: converted when nothing is lost, else refused."""
    source = s.dtype
    if target == pl.String:
        return text(s), None
    detail = ""
    out: pl.Series
    if target.is_integer():
        if source.is_integer():
            out = s.cast(target, strict=False)
            detail = " (out of range)"
        elif source.is_float():
            out = _whole(s, target)
            detail = " (not a whole number in range: it would be cut)"
        elif source == pl.String:
            out = s.cast(target, strict=False)
            out = out.fill_null(_whole(s.cast(pl.Float64, strict=False), target))
        else:
            out = _nulls(len(s), target)
    elif target.is_float():
        if source.is_integer():
            out = _keep(s.cast(target), (s >= -_INT53) & (s <= _INT53))
            detail = " (beyond 2**53 it would be rounded)"
        elif source.is_float():
            out = s.cast(target)
        elif source == pl.String:
            out = s.cast(target, strict=False)
        else:
            out = _nulls(len(s), target)
    elif target == pl.Boolean:
        if source == pl.String:
            out = s.replace_strict(
                {"true": True, "false": False}, default=None, return_dtype=pl.Boolean
            )
        else:
            out = _nulls(len(s), pl.Boolean)
    elif isinstance(target, pl.Datetime):
        out = _to_datetime(s, target)
    else:
        try:
            out = s.cast(target, strict=False)
        except _DECODE_ERRORS:
            out = _nulls(len(s), target)
    bad = s.is_not_null() & out.is_null()
    if not bad.any():
        return out, None
    return out, _drift_reason(s, target, path, bad, detail)


def _whole(s: pl.Series, target: PolarsDataType) -> pl.Series:
    """Floats that are whole numbers in the range of integer ``target``; null otherwise."""
    return _keep(s.cast(target, strict=False), s.is_finite() & (s == s.floor()))


def _to_datetime(s: pl.Series, target: pl.Datetime) -> pl.Series:
    """Timestamps (UTC wall time when the table's type has no zone), dates and ISO 8601 text."""
    source = s.dtype
    try:
        if isinstance(source, pl.Datetime):
            if source.time_zone is not None and target.time_zone is None:
                s = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            elif source.time_zone is None and target.time_zone is not None:
                s = s.dt.replace_time_zone("UTC")
            return s.cast(target)
        if source == pl.Date:
            return s.cast(target)
        if source == pl.String:
            return _to_datetime(s.str.to_datetime(time_unit=target.time_unit, strict=False), target)
    except _DECODE_ERRORS:
        pass
    return _nulls(len(s), target)


def _misfit_all(s: pl.Series, target: PolarsDataType | None, path: str) -> _Fit:
    """Every value refused: its kind cannot be held by the column at all."""
    if target is None:  # pragma: no cover - a new column takes any value
        raise LakeError(f"internal error: no type for new column {path}")
    present = s.is_not_null()
    if not present.any():
        return _nulls(len(s), target), None
    return _nulls(len(s), target), _drift_reason(s, target, path, present)


# -- reasons -------------------------------------------------------------------------------------


def _drift_reason(
    s: pl.Series, target: PolarsDataType, path: str, bad: pl.Series, detail: str = ""
) -> pl.Series:
    """``type drift: column "n" is BIGINT, this record has string "abc"`` for rows in ``bad``."""
    shown = text(s.filter(bad)).fill_null("null")
    long = shown.str.len_chars() > PREVIEW_CHARS
    shown = shown.str.slice(0, PREVIEW_CHARS) + long.replace_strict(
        {True: "…", False: ""}, return_dtype=pl.String
    )
    if s.dtype == pl.String:
        shown = '"' + shown + '"'
    head = f'type drift: column "{path}" is {sql_type(target)}, this record has '
    why = head + value_kind(s.dtype) + " " + shown + detail
    return _nulls(len(s)).scatter(bad.arg_true(), why)


def value_kind(dtype: PolarsDataType) -> str:
    """The kind of value a Polars type holds, in JSON's words where it has some."""
    if dtype == pl.String:
        return "string"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype == pl.Boolean:
        return "boolean"
    if isinstance(dtype, pl.Struct):
        return "object"
    if isinstance(dtype, pl.List | pl.Array):
        return "array"
    if isinstance(dtype, pl.Datetime):
        return "timestamp"
    return str(dtype).lower()


_SQL_NAMES: dict[type[pl.DataType], str] = {
    pl.String: "VARCHAR",
    pl.Int8: "TINYINT",
    pl.Int16: "SMALLINT",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.Float32: "FLOAT",
    pl.Float64: "DOUBLE",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
    pl.Binary: "BLOB",
}


def sql_type(dtype: PolarsDataType) -> str:
    """How a column's type is named in SQL (DuckDB's names, as ``DESCRIBE`` shows them)."""
    for cls, name in _SQL_NAMES.items():
        if dtype == cls:
            return name
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP" if dtype.time_zone is None else "TIMESTAMPTZ"
    if isinstance(dtype, pl.Struct):
        return "STRUCT (an object)"
    if isinstance(dtype, pl.List | pl.Array):
        return "LIST (an array)"
    return str(dtype).upper()


def text(s: pl.Series) -> pl.Series:
    """Values as text: strings as themselves, anything else as its compact JSON text."""
    dtype = s.dtype
    if dtype == pl.String:
        return s
    if isinstance(dtype, pl.Struct):
        out = pl.select(pl.lit(s).struct.json_encode()).to_series()
    elif isinstance(dtype, pl.List | pl.Array):
        wrapped = pl.select(pl.struct(pl.lit(s).alias("v")).struct.json_encode()).to_series()
        out = wrapped.str.slice(5).str.strip_suffix("}")  # {"v":[...]} -> [...]
    else:
        return s.cast(pl.String, strict=False)
    return _keep(out, s.is_not_null()).alias(s.name)  # a null object is no "null" text


# -- types ---------------------------------------------------------------------------------------


def union_type(a: PolarsDataType, b: PolarsDataType) -> PolarsDataType | None:
    """A type holding values of both ``a`` and ``b`` without loss (``a``'s spellings and member
    order first), or None when there is none (then text is the common type)."""
    if a == b:
        return a
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        members = {f.name: f.dtype for f in a.fields}
        spelled = _by_lower(members)
        for field in b.fields:
            name = spelled.get(field.name.lower())
            if name is None:
                members[field.name] = field.dtype
                spelled[field.name.lower()] = field.name
                continue
            joined = union_type(members[name], field.dtype)
            if joined is None:
                return None
            members[name] = joined
        return pl.Struct(members)
    if isinstance(a, pl.List) and isinstance(b, pl.List):
        inner = union_type(a.inner, b.inner)
        return pl.List(inner) if inner is not None else None
    if a.is_numeric() and b.is_numeric():
        return pl.Float64() if a.is_float() or b.is_float() else pl.Int64()
    if a == pl.Null:
        return b
    if b == pl.Null:
        return a
    return None


def reshape(s: pl.Series, target: PolarsDataType) -> pl.Series:
    """``s`` in exactly ``target``'s shape: object members matched by name and put in the table's
    order, members it lacks as null. For conformed values (raises LakeError for others)."""
    if s.dtype == target:
        return s
    if isinstance(target, pl.Struct) and isinstance(s.dtype, pl.Struct):
        have = {f.name for f in s.dtype.fields}
        members = [
            reshape(s.struct.field(f.name), f.dtype).alias(f.name)
            if f.name in have
            else _nulls(len(s), f.dtype, f.name)
            for f in target.fields
        ]
        return _struct(members, s.is_null(), s.name)
    if isinstance(target, pl.List) and isinstance(s.dtype, pl.List):
        array = _arrow(s)
        inner = reshape(pl.Series("element", array.flatten()), target.inner)
        return _relist(array, inner, s.name)
    if target == pl.String:
        return text(s)
    try:
        return s.cast(target, strict=True)
    except _DECODE_ERRORS as exc:
        raise LakeError(
            f"internal error: column {s.name!r} ({s.dtype}) was not conformed to {target}: {exc}"
        ) from exc
