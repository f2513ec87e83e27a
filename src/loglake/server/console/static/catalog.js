// The Catalog page: the lake's tables (schema, partitioning, snapshots, data files, properties),
// the streams (rates, lag, sources), rejected records grouped by reason, continuous queries and
// alerts. Everything it shows comes from /v1/catalog/* (server/console/catalog.py).
//
// The URL holds what is shown, so every view can be bookmarked:
//   ?section=tables|streams|rejected|queries
//   &table=logs.access&tab=schema|partitioning|snapshots|files|properties&page=N&size=50   (tables)
//   &reason=TEXT                                                                    (rejected)
// Snapshots and files are paged (size a page, one of PAGE_SIZES; the total always shown); streams and queries
// refresh every POLL_MS while shown.

import {api, el, guarded, showError} from "./api.js";

const SECTIONS = [
  ["tables", "Tables"],
  ["streams", "Streams"],
  ["rejected", "Rejected records"],
  ["queries", "Queries & alerts"],
];
const TABS = [
  ["schema", "Schema"],
  ["partitioning", "Partitioning"],
  ["snapshots", "Snapshots"],
  ["files", "Files"],
  ["properties", "Properties"],
];
const PAGE_SIZES = [20, 50, 100, 200];
const PAGE_SIZE = 50;
const SAMPLE_PAGE = 20;
const POLL_MS = 5000;

const NUMBER = new Intl.NumberFormat("en-US");

function num(value) {
  return value === null || value === undefined ? "–" : NUMBER.format(value);
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = value;
  let unit = 0;
  while (v >= 1024 && unit < units.length - 1) {
    v /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${v.toFixed(1)} ${units[unit]}`;
}

function rate(value) {
  if (value === null || value === undefined) return "measuring…";
  return `${value >= 100 ? NUMBER.format(Math.round(value)) : value.toFixed(1)}/s`;
}

function plural(n, word, many = `${word}s`) {
  return `${num(n)} ${n === 1 ? word : many}`;
}

// A time as the API gives it, without a fraction of zeros.
function time(value) {
  return value ? value.replace(/\.0+$/, "") : "";
}

function cellNum(value, attrs = {}) {
  return el("td", {class: "num", ...attrs}, num(value));
}

function tag(textValue, kind) {
  return el("span", {class: kind ? `tag ${kind}` : "tag"}, textValue);
}

const STATE_KIND = {
  "caught up": "ok",
  delivering: "",
  resuming: "warn",
  stopped: "bad",
  running: "ok",
  waiting: "",
  inactive: "ok",
  pending: "warn",
  firing: "bad",
};

export async function mount(root, ctx) {
  const params = ctx.params;
  const state = {
    section: SECTIONS.some(([key]) => key === params.get("section")) ? params.get("section") : "tables",
    table: params.get("table") || "",
    tab: TABS.some(([key]) => key === params.get("tab")) ? params.get("tab") : "schema",
    page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1),
    size: PAGE_SIZES.includes(Number(params.get("size"))) ? Number(params.get("size")) : PAGE_SIZE,
    reason: params.get("reason"),
  };
  let timer = null;
  let controller = new AbortController();
  let generation = 0; // a view started later wins over an older one still loading

  const nav = el("nav", {class: "catalog-sections", role: "tablist"});
  const refresh = el("button", {type: "button", id: "catalog-refresh", onclick: () => show()}, "Refresh");
  const body = el("div", {id: "catalog-body"});
  root.append(el("div", {class: "toolbar"}, nav, el("span", {class: "spacer"}), refresh), body);

  function drawNav() {
    nav.replaceChildren(
      ...SECTIONS.map(([key, label]) =>
        el(
          "button",
          {
            type: "button",
            role: "tab",
            class: key === state.section ? "active" : "",
            "aria-selected": key === state.section ? "true" : "false",
            dataset: {section: key},
            onclick: () => go({section: key}),
          },
          label,
        ),
      ),
    );
  }

  // Change what is shown: into the URL (a history entry, so Back returns), then draw it.
  function go(changes, {push = true} = {}) {
    Object.assign(state, changes);
    ctx.setParams(
      {
        section: state.section === "tables" ? null : state.section,
        table: state.section === "tables" ? state.table : null,
        tab: state.section === "tables" && state.tab !== "schema" ? state.tab : null,
        page: state.section === "tables" && state.page > 1 ? state.page : null,
        size: state.section === "tables" && state.size !== PAGE_SIZE ? state.size : null,
        reason: state.section === "rejected" ? state.reason : null,
      },
      {push},
    );
    show();
  }

  async function show() {
    generation++;
    controller.abort();
    controller = new AbortController();
    clearTimeout(timer);
    timer = null;
    drawNav();
    body.dataset.section = state.section;
    const draw = {tables: showTables, streams: showStreams, rejected: showRejected, queries: showQueries}[state.section];
    await guarded(() => draw(generation, controller.signal));
  }

  // Run load() now and every POLL_MS while this view stays shown.
  function poll(mine, load) {
    const tick = async () => {
      if (mine !== generation) return;
      await guarded(load);
      if (mine === generation) timer = setTimeout(tick, POLL_MS);
    };
    return tick();
  }

  // ---- tables ---------------------------------------------------------------------------------

  async function showTables(mine, signal) {
    const {tables} = await api("/v1/catalog/tables", {signal});
    if (mine !== generation) return;
    if (!tables.length) {
      body.replaceChildren(el("div", {class: "panel muted"}, "The lake has no tables yet: ingest or stream some logs."));
      return;
    }
    if (!tables.some((t) => t.name === state.table)) {
      const asked = state.table;
      state.table = tables.some((t) => t.name === "logs.access") ? "logs.access" : tables[0].name;
      state.page = 1;
      ctx.setParams({table: state.table, page: null});
      if (asked) showError(`table ${asked} does not exist; showing ${state.table}. The tables are: ${tables.map((t) => t.name).join(", ")}`);
    }
    const list = el(
      "table",
      {class: "plain catalog-tables", id: "catalog-tables"},
      el("thead", {}, el("tr", {}, el("th", {}, "table"), el("th", {class: "num"}, "rows"), el("th", {class: "num"}, "size"))),
      el(
        "tbody",
        {},
        tables.map((t) =>
          el(
            "tr",
            {
              class: t.name === state.table ? "selected" : "",
              dataset: {table: t.name, rows: t.rows ?? ""},
              tabindex: 0,
              onclick: () => go({table: t.name, page: 1}),
              onkeydown: (e) => e.key === "Enter" && go({table: t.name, page: 1}),
              title: t.writers.length ? `written by ${t.writers.join(", ")}` : "",
            },
            el(
              "td",
              {},
              el("span", {class: "mono name"}, t.name),
              t.error ? el("div", {class: "tag bad"}, t.error) : el("div", {class: "muted small"}, `${plural(t.files, "file")}${t.last_commit ? " · " + t.last_commit : ""}`),
            ),
            el("td", {class: "num rows"}, num(t.rows)),
            el("td", {class: "num"}, bytes(t.size)),
          ),
        ),
      ),
    );
    const detail = el("div", {class: "panel catalog-detail", id: "table-detail"}, el("p", {class: "muted"}, "Loading…"));
    body.replaceChildren(el("div", {class: "catalog-split"}, el("div", {class: "panel catalog-list"}, el("h2", {}, plural(tables.length, "table")), list), detail));
    const info = await api(`/v1/catalog/tables/${encodeURIComponent(state.table)}`, {signal});
    if (mine !== generation) return;
    detail.dataset.table = info.name;
    detail.dataset.rows = info.rows ?? 0;
    const tabs = el(
      "nav",
      {class: "catalog-tabs", role: "tablist"},
      TABS.map(([key, label]) => {
        const count = key === "snapshots" ? info.snapshots : key === "files" ? info.files : null;
        return el(
          "button",
          {
            type: "button",
            role: "tab",
            class: key === state.tab ? "active" : "",
            dataset: {tab: key},
            onclick: () => go({tab: key, page: 1}),
          },
          label,
          count === null || count === undefined ? null : el("span", {class: "count"}, num(count)),
        );
      }),
    );
    const content = el("div", {class: "catalog-tab", id: `tab-${state.tab}`});
    detail.replaceChildren(
      el("h2", {}, info.name),
      el(
        "div",
        {class: "catalog-facts"},
        fact("rows", num(info.rows), "rows"),
        fact("data files", num(info.files), "files"),
        fact("size", bytes(info.size), "size"),
        fact("snapshots", num(info.snapshots), "snapshots"),
        fact("last updated (UTC)", info.last_updated || "–"),
        fact("format", info.external ? `${info.format} in place (external table)` : `Iceberg v${info.format_version}`),
      ),
      tabs,
      content,
    );
    const tab = {schema: schemaTab, partitioning: partitionTab, snapshots: snapshotTab, files: filesTab, properties: propertiesTab}[state.tab];
    await tab(content, info, mine, signal);
  }

  function fact(label, value, key) {
    return el("div", {class: "fact", dataset: key ? {fact: key} : {}}, el("div", {class: "muted"}, label), el("div", {class: "value"}, value));
  }

  function schemaTab(content, info) {
    const evolved =
      info.schemas > 1
        ? `${info.schemas} schemas: the table's columns changed; files written before a column was added read it as null.`
        : "One schema since the table was created.";
    content.append(
      el("p", {class: "muted"}, `${plural(info.schema.length, "field")} · schema id ${info.schema_id} · ${evolved}`),
      el(
        "table",
        {class: "plain", id: "schema"},
        el("thead", {}, el("tr", {}, el("th", {class: "num"}, "field id"), el("th", {}, "name"), el("th", {}, "type"), el("th", {}, "nullable"), el("th", {}, "doc"))),
        el(
          "tbody",
          {},
          info.schema.map((f) =>
            el(
              "tr",
              {dataset: {column: f.name, type: f.type, id: f.id, required: f.required}},
              el("td", {class: "num"}, f.id),
              el("td", {class: "mono", style: `padding-left:${8 + 16 * f.depth}px`}, f.name),
              el("td", {class: "mono"}, f.type),
              el("td", {}, f.required ? tag("required") : "nullable"),
              el("td", {class: "muted"}, f.doc || ""),
            ),
          ),
        ),
      ),
    );
  }

  function partitionTab(content, info) {
    const spec = info.partition_spec;
    const specTable = (s) =>
      s.fields.length
        ? el(
            "table",
            {class: "plain", dataset: {spec: s.spec_id}},
            el("thead", {}, el("tr", {}, el("th", {}, "partition field"), el("th", {}, "source column"), el("th", {}, "transform"), el("th", {class: "num"}, "field id"))),
            el(
              "tbody",
              {},
              s.fields.map((f) =>
                el("tr", {}, el("td", {class: "mono"}, f.name), el("td", {class: "mono"}, f.source ?? `(dropped column ${f.source_id})`), el("td", {class: "mono"}, f.transform), el("td", {class: "num"}, f.field_id)),
              ),
            ),
          )
        : el("p", {class: "muted"}, "Not partitioned.");
    content.append(el("h3", {}, `Current partition spec (id ${spec.spec_id})`), specTable(spec));
    const older = info.partition_specs.filter((s) => s.spec_id !== spec.spec_id);
    if (older.length) {
      content.append(
        el("h3", {}, "Earlier specs"),
        el("p", {class: "muted"}, "Files written under an earlier spec keep its layout; new files use the current one."),
        ...older.map((s) => el("div", {dataset: {spec: s.spec_id}}, el("div", {class: "muted"}, `spec id ${s.spec_id}${s.fields.length ? "" : ": not partitioned"}`), s.fields.length ? specTable(s) : null)),
      );
    }
    content.append(
      el("h3", {}, "Sort order"),
      info.sort_order.length
        ? el(
            "table",
            {class: "plain"},
            el("thead", {}, el("tr", {}, el("th", {}, "column"), el("th", {}, "transform"), el("th", {}, "direction"), el("th", {}, "nulls"))),
            el("tbody", {}, info.sort_order.map((f) => el("tr", {}, el("td", {class: "mono"}, f.source ?? "?"), el("td", {}, f.transform), el("td", {}, f.direction), el("td", {}, f.null_order)))),
          )
        : el("p", {class: "muted"}, "Unsorted in the metadata (loglake sorts each file it writes by its time column)."),
    );
  }

  // A pager: "Files 51–100 of 48,213" with first/previous/next/last, a page number box and the
  // page size.
  function pager(what, total, page, onPage) {
    const size = state.size;
    const pages = Math.max(1, Math.ceil(total / size));
    const first = total ? (page - 1) * size + 1 : 0;
    const last = Math.min(total, page * size);
    const sizes = el(
      "select",
      {class: "page-size", "aria-label": "per page", onchange: (e) => go({size: Number(e.target.value), page: 1})},
      PAGE_SIZES.map((n) => el("option", {value: n, selected: n === size}, `${n} a page`)),
    );
    const box = el("input", {type: "number", min: 1, max: pages, value: page, class: "page-box", "aria-label": "page"});
    box.addEventListener("change", () => onPage(Math.min(pages, Math.max(1, parseInt(box.value, 10) || 1))));
    return el(
      "div",
      {class: "toolbar pager", dataset: {total, page, pages, first, last}},
      el("span", {class: "pager-text"}, total ? `${what} ${num(first)}–${num(last)} of ${num(total)}` : `No ${what.toLowerCase()}`),
      el("span", {class: "spacer"}),
      el("button", {type: "button", "data-go": "first", disabled: page <= 1, onclick: () => onPage(1)}, "« First"),
      el("button", {type: "button", "data-go": "prev", disabled: page <= 1, onclick: () => onPage(page - 1)}, "‹ Previous"),
      el("span", {class: "muted"}, "page"),
      box,
      el("span", {class: "muted"}, `of ${num(pages)}`),
      el("button", {type: "button", "data-go": "next", disabled: page >= pages, onclick: () => onPage(page + 1)}, "Next ›"),
      el("button", {type: "button", "data-go": "last", disabled: page >= pages, onclick: () => onPage(pages)}, "Last »"),
      sizes,
    );
  }

  async function snapshotTab(content, info, mine, signal) {
    const offset = (state.page - 1) * state.size;
    const data = await api(`/v1/catalog/tables/${encodeURIComponent(info.name)}/snapshots?offset=${offset}&limit=${state.size}`, {signal});
    if (mine !== generation) return;
    if (offset && offset >= data.total) return go({page: Math.max(1, Math.ceil(data.total / state.size))}, {push: false});
    const rows = data.snapshots.map((s) =>
      el(
        "tr",
        {dataset: {snapshot: s.snapshot_id, added: s.added_rows, deleted: s.deleted_rows, operation: s.operation}},
        el("td", {class: "mono nowrap"}, s.time),
        el("td", {}, tag(s.operation || "?", s.operation === "append" ? "ok" : s.operation === "delete" ? "bad" : "")),
        cellNum(s.added_rows, {class: "num added"}),
        cellNum(s.deleted_rows),
        cellNum(s.added_files),
        cellNum(s.deleted_files),
        cellNum(s.total_rows),
        el("td", {class: "mono"}, String(s.snapshot_id), s.current ? el("span", {class: "tag ok"}, " current") : null),
        el(
          "td",
          {},
          el(
            "details",
            {},
            el("summary", {}, plural(Object.keys(s.summary).length, "entry", "entries")),
            el("table", {class: "plain kv"}, el("tbody", {}, Object.entries(s.summary).map(([k, v]) => el("tr", {}, el("td", {class: "mono"}, k), el("td", {class: "mono wrap"}, v))))),
          ),
        ),
      ),
    );
    content.append(
      pager("Snapshots", data.total, state.page, (page) => go({page})),
      el("p", {class: "muted"}, "Newest first. Old snapshots are expired by maintenance (the last 10 and each stream's latest position are kept), so they may not add up to every row ever written."),
      el(
        "table",
        {class: "plain", id: "snapshots"},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", {}, "time (UTC)"),
            el("th", {}, "operation"),
            el("th", {class: "num"}, "rows added"),
            el("th", {class: "num"}, "rows removed"),
            el("th", {class: "num"}, "files added"),
            el("th", {class: "num"}, "files removed"),
            el("th", {class: "num"}, "total rows"),
            el("th", {}, "snapshot id"),
            el("th", {}, "summary"),
          ),
        ),
        el("tbody", {}, rows),
      ),
    );
  }

  async function filesTab(content, info, mine, signal) {
    const offset = (state.page - 1) * state.size;
    const data = await api(`/v1/catalog/tables/${encodeURIComponent(info.name)}/files?offset=${offset}&limit=${state.size}`, {signal});
    if (mine !== generation) return;
    if (offset && offset >= data.total) return go({page: Math.max(1, Math.ceil(data.total / state.size))}, {push: false});
    const base = info.location.replace(/^file:\/\//, "").replace(/\/?$/, "/");
    content.append(
      pager("Files", data.total, state.page, (page) => go({page})),
      el(
        "p",
        {class: "muted"},
        `The current snapshot's data files, newest data first: ${num(data.rows)} rows in ${bytes(data.size)}. Paths are under ${base}; the partition is the one the path shows.`,
      ),
      el(
        "table",
        {class: "plain", id: "files"},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", {}, "partition"),
            el("th", {class: "num"}, "rows"),
            el("th", {class: "num"}, "size"),
            el("th", {}, data.time_column ? `first ${data.time_column} (UTC)` : "first record"),
            el("th", {}, data.time_column ? `last ${data.time_column} (UTC)` : "last record"),
            el("th", {}, "path"),
          ),
        ),
        el(
          "tbody",
          {},
          data.files.map((f) =>
            el(
              "tr",
              {dataset: {file: f.path, rows: f.rows, size: f.size}},
              el("td", {class: "mono nowrap"}, f.partition || el("span", {class: "muted"}, "unpartitioned")),
              cellNum(f.rows),
              el("td", {class: "num"}, bytes(f.size)),
              el("td", {class: "mono nowrap"}, time(f.ts_min)),
              el("td", {class: "mono nowrap"}, time(f.ts_max)),
              el("td", {class: "mono path", title: f.path}, f.path.startsWith(base) ? f.path.slice(base.length) : f.path),
            ),
          ),
        ),
      ),
    );
  }

  function propertiesTab(content, info) {
    const rows = [
      ["location", info.location],
      ["metadata", info.metadata_location],
      ["uuid", info.uuid],
      ["format version", String(info.format_version)],
      ["current snapshot", info.current_snapshot_id === null ? "none (empty table)" : String(info.current_snapshot_id)],
      ...Object.entries(info.properties),
    ];
    content.append(
      el(
        "table",
        {class: "plain kv", id: "properties"},
        el("tbody", {}, rows.map(([k, v]) => el("tr", {dataset: {key: k}}, el("th", {}, k), el("td", {class: "mono wrap"}, v)))),
      ),
    );
  }

  // ---- streams --------------------------------------------------------------------------------

  async function showStreams(mine, signal) {
    const panel = el("div", {class: "panel"}, el("p", {class: "muted"}, "Loading…"));
    body.replaceChildren(panel);
    await poll(mine, async () => {
      const {streams} = await api("/v1/catalog/streams", {signal});
      if (mine !== generation) return;
      drawStreams(panel, streams);
    });
  }

  function drawStreams(panel, streams) {
    if (!streams.length) {
      panel.replaceChildren(el("p", {class: "muted"}, "No streams: declare one under [streams.NAME] or create one with PUT /v1/streams/NAME."));
      return;
    }
    const lagText = (s) => {
      if (!s.lag) return "0";
      const eta = s.rate_out ? ` (≈ ${Math.ceil(s.lag / s.rate_out)} s)` : "";
      return `${num(s.lag)}${eta}`;
    };
    const sources = (s) =>
      s.sources.length
        ? s.sources.map((src) => {
            const dropped = Object.entries(src.dropped).map(([why, n]) => `${num(n)} dropped (${why})`);
            const parts = [`${num(src.received)} received`, `${num(src.accepted)} accepted`, src.rejected ? `${num(src.rejected)} refused` : null, ...dropped].filter(Boolean);
            return el("div", {class: "source", dataset: {source: src.name}}, el("b", {}, src.name), ": ", parts.join(" · "));
          })
        : el("span", {class: "muted"}, "none since start");
    panel.replaceChildren(
      el("h2", {}, plural(streams.length, "stream")),
      el(
        "p",
        {class: "muted"},
        `Rates are records per second over the last ${streams[0].rate_seconds ? Math.round(streams[0].rate_seconds) + " s" : "minute"} (measured while this page is open). Lag: records acknowledged but not yet committed to the lake.`,
      ),
      el(
        "table",
        {class: "plain", id: "streams"},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", {}, "stream"),
            el("th", {}, "format → table"),
            el("th", {}, "state"),
            el("th", {class: "num"}, "in"),
            el("th", {class: "num"}, "out"),
            el("th", {class: "num"}, "lag"),
            el("th", {class: "num"}, "appended"),
            el("th", {class: "num"}, "delivered"),
            el("th", {class: "num"}, "rejected"),
            el("th", {class: "num"}, "commits"),
            el("th", {}, "sources"),
            el("th", {}, "queries"),
          ),
        ),
        el(
          "tbody",
          {},
          streams.map((s) =>
            el(
              "tr",
              {dataset: {stream: s.name, lag: s.lag, next: s.next_offset, delivered: s.delivered, rejected: s.rejected}},
              el("td", {class: "mono"}, s.name),
              el("td", {}, el("span", {class: "mono"}, s.format), " → ", el("a", {href: `/console/catalog?table=${encodeURIComponent(s.table)}`}, s.table)),
              el("td", {}, tag(s.state, STATE_KIND[s.state]), s.last_error ? el("div", {class: "tag bad wrap", title: s.last_error}, s.last_error) : null),
              el("td", {class: "num rate-in"}, rate(s.rate_in)),
              el("td", {class: "num rate-out"}, rate(s.rate_out)),
              el("td", {class: "num lag"}, lagText(s)),
              cellNum(s.next_offset),
              cellNum(s.delivered),
              el("td", {class: "num"}, s.rejected ? el("a", {href: "/console/catalog?section=rejected"}, num(s.rejected)) : "0"),
              cellNum(s.commits),
              el("td", {class: "sources"}, sources(s)),
              el("td", {class: "mono"}, s.queries.join(", ")),
            ),
          ),
        ),
      ),
    );
  }

  // ---- rejected records -----------------------------------------------------------------------

  async function showRejected(mine, signal) {
    const data = await api("/v1/catalog/rejected", {signal});
    if (mine !== generation) return;
    const panel = el("div", {class: "panel", id: "rejected", dataset: {reasons: data.reasons, records: data.records}});
    body.replaceChildren(panel);
    panel.append(
      el("h2", {}, `${plural(data.records, "rejected record")} in ${plural(data.reasons, "reason")}`),
      el("p", {class: "muted"}, "Lines and records that could not be stored, kept raw in logs.rejected. Grouped by reason, the group seen last first; open a group for its lines, newest first."),
    );
    if (data.note) panel.append(el("p", {class: "note tag warn"}, data.note));
    if (!data.groups.length) {
      panel.append(el("p", {class: "muted"}, "Nothing was rejected."));
      return;
    }
    const tbody = el("tbody");
    panel.append(
      el(
        "table",
        {class: "plain groups"},
        el(
          "thead",
          {},
          el("tr", {}, el("th", {}, "reason"), el("th", {class: "num"}, "records"), el("th", {}, "last seen (UTC)"), el("th", {}, "first seen (UTC)"), el("th", {}, "sources"), el("th", {}, "meant for")),
        ),
        tbody,
      ),
    );
    for (const g of data.groups) {
      const open = g.reason === state.reason;
      const more = g.source_count > g.sources.length ? ` and ${num(g.source_count - g.sources.length)} more` : "";
      const row = el(
        "tr",
        {class: open ? "group open" : "group", dataset: {reason: g.reason, records: g.records}, tabindex: 0, "aria-expanded": open ? "true" : "false"},
        el("td", {}, el("span", {class: "twisty"}, open ? "▾" : "▸"), " ", el("span", {class: "reason"}, g.reason || "(no reason)")),
        cellNum(g.records),
        el("td", {class: "mono"}, g.last_seen),
        el("td", {class: "mono"}, g.first_seen),
        el("td", {class: "mono"}, g.sources.join(", ") + more),
        el("td", {class: "mono"}, `${g.tables.join(", ")} (${g.formats.join(", ")})`),
      );
      const toggle = () => go({reason: open ? null : g.reason});
      row.addEventListener("click", toggle);
      row.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          toggle();
        }
      });
      tbody.append(row);
      if (open) {
        const holder = el("td", {colspan: 6});
        tbody.append(el("tr", {class: "samples-row"}, holder));
        await samples(holder, g, mine, signal);
      }
    }
  }

  // The lines of one group, SAMPLE_PAGE at a time ("Show more" fetches the next ones).
  async function samples(holder, group, mine, signal) {
    const list = el("tbody");
    const status = el("span", {class: "muted"});
    const moreButton = el("button", {type: "button", class: "more"}, `Show ${SAMPLE_PAGE} more`);
    holder.append(
      el(
        "table",
        {class: "plain samples", dataset: {reason: group.reason}},
        el("thead", {}, el("tr", {}, el("th", {}, "received (UTC)"), el("th", {}, "source"), el("th", {class: "num"}, "line / offset"), el("th", {class: "num"}, "bytes"), el("th", {}, "raw line"))),
        list,
      ),
      el("div", {class: "toolbar"}, status, moreButton),
    );
    let shown = 0;
    const load = async () => {
      moreButton.disabled = true;
      const url = `/v1/catalog/rejected/samples?reason=${encodeURIComponent(group.reason)}&offset=${shown}&limit=${SAMPLE_PAGE}`;
      const data = await api(url, {signal});
      if (mine !== generation) return;
      for (const s of data.samples) {
        list.append(
          el(
            "tr",
            {class: "sample"},
            el("td", {class: "mono"}, s.ingested_at),
            el("td", {class: "mono"}, s.source),
            cellNum(s.line),
            cellNum(s.bytes),
            el("td", {}, el("pre", {class: "raw"}, s.text), s.text_cut ? tag(`cut to the first ${num(s.text.length)} characters`, "warn") : null),
          ),
        );
      }
      shown += data.samples.length;
      holder.dataset.shown = shown;
      status.textContent = `${num(shown)} of ${num(group.records)} lines shown`;
      moreButton.hidden = shown >= group.records || data.samples.length < SAMPLE_PAGE;
      moreButton.disabled = false;
    };
    moreButton.addEventListener("click", () => guarded(load));
    await load();
  }

  // ---- continuous queries and alerts -----------------------------------------------------------

  async function showQueries(mine, signal) {
    const queriesPanel = el("div", {class: "panel"}, el("p", {class: "muted"}, "Loading…"));
    const alertsPanel = el("div", {class: "panel"});
    body.replaceChildren(queriesPanel, alertsPanel);
    await poll(mine, async () => {
      const data = await api("/v1/catalog/queries", {signal});
      if (mine !== generation) return;
      drawQueries(queriesPanel, data.queries);
      drawAlerts(alertsPanel, data.alerts);
    });
  }

  function drawQueries(panel, queries) {
    panel.replaceChildren(el("h2", {}, `${plural(queries.length, "continuous query", "continuous queries")}`));
    if (!queries.length) {
      panel.append(el("p", {class: "muted"}, "No continuous queries: declare them under [queries.NAME] (docs/analytics.md) or create one with PUT /v1/queries/NAME."));
      return;
    }
    panel.append(
      el(
        "table",
        {class: "plain", id: "queries"},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", {}, "query"),
            el("th", {}, "stream"),
            el("th", {}, "window"),
            el("th", {}, "state"),
            el("th", {}, "watermark (UTC)"),
            el("th", {}, "last result (UTC)"),
            el("th", {class: "num"}, "windows"),
            el("th", {class: "num"}, "result rows"),
            el("th", {class: "num"}, "failed"),
            el("th", {}, "SQL"),
          ),
        ),
        el(
          "tbody",
          {},
          queries.map((q) =>
            el(
              "tr",
              {dataset: {query: q.name, state: q.state}},
              el(
                "td",
                {class: "mono"},
                q.name,
                // The results table exists once the first window's results were written.
                el("div", {class: "small"}, q.result_rows ? el("a", {href: `/console/catalog?table=${encodeURIComponent(q.table)}`}, q.table) : `→ ${q.table}`),
              ),
              el("td", {class: "mono"}, q.stream),
              el("td", {class: "mono"}, q.window, q.key ? el("div", {class: "muted"}, `per ${q.key}`) : null),
              el("td", {}, tag(q.state, STATE_KIND[q.state]), q.last_error ? el("div", {class: "tag bad wrap", title: q.last_error}, q.last_error) : null),
              el("td", {class: "mono"}, q.watermark || "–"),
              el("td", {class: "mono"}, q.last_result_at || "none yet", q.last_window_start ? el("div", {class: "muted"}, `window ${q.last_window_start}`) : null),
              cellNum(q.windows),
              cellNum(q.result_rows),
              el("td", {class: q.failed_windows ? "num bad" : "num"}, num(q.failed_windows)),
              el("td", {}, el("pre", {class: "sql"}, q.sql)),
            ),
          ),
        ),
      ),
    );
  }

  function drawAlerts(panel, alerts) {
    const firing = alerts.filter((a) => a.state === "firing").length;
    panel.replaceChildren(el("h2", {}, `${plural(alerts.length, "alert")}${firing ? `, ${num(firing)} firing` : ""}`));
    if (!alerts.length) {
      panel.append(el("p", {class: "muted"}, "No alerts: declare them under [alerts.NAME] in the config file (docs/analytics.md)."));
      return;
    }
    panel.append(
      el(
        "table",
        {class: "plain", id: "alerts"},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", {}, "alert"),
            el("th", {}, "query"),
            el("th", {}, "when"),
            el("th", {}, "severity"),
            el("th", {}, "state"),
            el("th", {}, "since (window, UTC)"),
            el("th", {class: "num"}, "fired"),
            el("th", {class: "num"}, "resolved"),
            el("th", {class: "num"}, "suppressed"),
          ),
        ),
        el(
          "tbody",
          {},
          alerts.map((a) =>
            el(
              "tr",
              {dataset: {alert: a.name, state: a.state}},
              el("td", {class: "mono"}, a.name),
              el("td", {class: "mono"}, a.query),
              el("td", {}, el("code", {}, a.when), a.for > 1 ? el("div", {class: "muted"}, `for ${a.for} windows`) : null),
              el("td", {}, tag(a.severity, a.severity === "critical" ? "bad" : "warn")),
              el("td", {}, tag(a.state, STATE_KIND[a.state])),
              el("td", {class: "mono"}, a.since || "–"),
              cellNum(a.fired),
              cellNum(a.resolved),
              cellNum(a.suppressed),
            ),
          ),
        ),
      ),
    );
  }

  await show();
  return () => {
    generation++;
    clearTimeout(timer);
    controller.abort();
  };
}
