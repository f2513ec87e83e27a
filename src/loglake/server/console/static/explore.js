// The Explore page (Kibana Discover / Grafana Explore): pick a table and a time range, filter,
// see a histogram of the matching records over time (drag across it to zoom), scroll through
// every matching record newest first (fetched page by page as you scroll: no limit), open one to
// see all its fields, its line and the records around it, see the top values of fields and add
// them to the filter with one click, follow new records live, download what matches.
//
// The URL holds the view: table, from, to, q (the filter), where (SQL), fields (shown as columns
// and with their top values). Relative times (now-24h) stay relative in the URL and are resolved
// once per search, so every request of one search sees the same range.
//
// The API is /v1/explore/* (server/console/explore.py). Tests read data attributes:
//   .explore-results[data-state="ready"|"loading"|"error"], [data-total], [data-loaded]
//   .explore-histogram[data-counts] (comma-separated counts per bucket), [data-bucket]
//   .explore-top[data-state], .explore-detail, .explore-tail[data-new]

import {api, el, guarded, rowsOf, showError, text} from "./api.js";
import {drawChart} from "./chart.js";
import {createGrid, ROW_HEIGHT} from "./grid.js";

const QUICK = [
  ["now-5m", "Last 5 minutes"],
  ["now-15m", "Last 15 minutes"],
  ["now-1h", "Last 1 hour"],
  ["now-4h", "Last 4 hours"],
  ["now-24h", "Last 24 hours"],
  ["now-7d", "Last 7 days"],
  ["now-30d", "Last 30 days"],
  ["now-90d", "Last 90 days"],
];
const FIRST_PAGE = 100; // rows of the first page (what the page shows first, fast)
const PAGE = 500; // rows of each next page
const KEEP_ROWS = 200_000; // loaded rows kept in memory; pages further from the view are dropped and refetched
const TAIL_EVERY_MS = 1500;
const TAIL_MAX_ROWS = 20_000; // past this many live rows the view is searched afresh
const LINE = "log line"; // the grid's last column: the record's line (not a column of the table)
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

// -- times -------------------------------------------------------------------------------------------

const RELATIVE = /^now(?:\s*-\s*(\d+)\s*(ms|s|m|h|d|w))?$/;
const UNIT_MS = {ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000};

// "now-15m" → an absolute UTC time text at `now` (ms); absolute text is sent as written.
function resolveTime(value, now) {
  const m = RELATIVE.exec(value.trim());
  if (!m) return value.trim();
  return isoText(now - (m[1] ? Number(m[1]) * UNIT_MS[m[2] || "s"] : 0));
}

// epoch ms → "2026-01-06 10:00:00.000" (UTC), the form the API and the inputs take.
function isoText(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

// "2026-01-06 10:00:00.000000" → epoch seconds (UTC)
function seconds(value) {
  const iso = String(value).replace(" ", "T").replace(/(\.\d{3})\d*/, "$1");
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z") / 1000;
}

// -- the filter ---------------------------------------------------------------------------------------

// The filter term matching `field` = `value` (as the server's term_text writes it): quoted unless
// the value is a plain word, so quotes, colons, spaces and * stay literal.
export function termText(field, value) {
  if (!field || /[\s:"]/.test(field) || field.startsWith("-")) return null;
  if (value === null || value === undefined) return `-${field}:*`;
  if (typeof value === "object") return null; // a struct's or list's text is DuckDB's own: use the WHERE
  const shown = typeof value === "string" ? value : String(value);
  if (/^[A-Za-z0-9_./@+][A-Za-z0-9_./@+-]*$/.test(shown)) return `${field}:${shown}`;
  return `${field}:"${shown.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

// The terms of a filter text, as written (quotes kept), for adding and removing whole terms.
function splitTerms(q) {
  const terms = [];
  let i = 0;
  while (i < q.length) {
    if (/\s/.test(q[i])) {
      i++;
      continue;
    }
    let j = i;
    let quoted = false;
    while (j < q.length && (quoted || !/\s/.test(q[j]))) {
      if (q[j] === "\\" && quoted) j++;
      else if (q[j] === '"') quoted = !quoted;
      j++;
    }
    terms.push(q.slice(i, j));
    i = j;
  }
  return terms;
}

function negate(term) {
  return term.startsWith("-") ? term.slice(1) : `-${term}`;
}

// q with `term` in it and its opposite out of it.
export function withTerm(q, term) {
  const terms = splitTerms(q).filter((t) => t !== negate(term) && t !== term);
  terms.push(term);
  return terms.join(" ");
}

// -- a record's line ------------------------------------------------------------------------------

function clfTime(value) {
  const m = /^(\d{4})-(\d\d)-(\d\d)[ T](\d\d:\d\d:\d\d)/.exec(String(value));
  if (!m) return String(value);
  return `${m[3]}/${MONTHS[Number(m[2]) - 1]}/${m[1]}:${m[4]} +0000`;
}

// What the page shows as a record's line: its line column, the combined log line rebuilt from an
// access log's fields, or the fields as JSON.
function lineOf(record, info) {
  if (info.raw === "combined") {
    const v = (name) => (record[name] === null || record[name] === undefined || record[name] === "" ? "-" : record[name]);
    const target = record.query ? `${record.path}?${record.query}` : record.path;
    const request = [record.method, target, record.protocol].filter((x) => x !== null && x !== undefined).join(" ");
    return (
      `${v("client")} ${v("ident")} ${v("user")} [${clfTime(record[info.time_column])}] "${request}" ` +
      `${v("status")} ${v("bytes")} "${v("referrer")}" "${v("user_agent")}"`
    );
  }
  if (info.raw) return text(record[info.raw]);
  const rest = {};
  for (const [k, value] of Object.entries(record)) if (k !== info.time_column) rest[k] = value;
  return JSON.stringify(rest);
}

// -- the page -----------------------------------------------------------------------------------------

export async function mount(root, ctx) {
  const listed = await api("/v1/explore/tables");
  const usable = listed.tables.filter((t) => !t.error);
  if (!usable.length) {
    root.append(
      el("div", {class: "panel"}, el("p", {}, "The lake has no table to explore yet: ingest some logs (", el("code", {}, "loglake ingest"), ") or post records to a stream.")),
    );
    return null;
  }
  const byName = new Map(usable.map((t) => [t.name, t]));
  const params = ctx.params;
  let info = byName.get(params.get("table")) || byName.get(listed.default) || usable[0];
  if (params.get("table") && !byName.has(params.get("table"))) {
    showError(`no lake table ${params.get("table")}; showing ${info.name}`);
  }
  const state = {
    table: info.name,
    from: params.get("from") || "now-24h",
    to: params.get("to") || "now",
    q: params.get("q") || "",
    where: params.get("where") || "",
    fields: params.has("fields") ? params.get("fields").split(",").filter(Boolean) : info.default_fields.slice(),
  };
  state.fields = state.fields.filter((f) => info.columns.some((c) => c.name === f));

  // -- the controls --
  const tableSelect = el("select", {name: "table", title: "table"}, usable.map((t) => el("option", {value: t.name}, t.name)));
  tableSelect.value = info.name;
  const quick = el("select", {name: "quick", title: "quick ranges"}, [el("option", {value: ""}, "Custom range"), ...QUICK.map(([v, label]) => el("option", {value: v}, label))]);
  const fromInput = el("input", {name: "from", size: 22, title: "from: an ISO time (UTC) or now-15m, now-24h, now-7d…"});
  const toInput = el("input", {name: "to", size: 22, title: "to: an ISO time (UTC) or now"});
  const qInput = el("input", {name: "q", class: "grow", placeholder: 'filter: status:404 -method:POST path:"/a b" path:/api/* free text', spellcheck: "false"});
  const whereInput = el("input", {name: "where", class: "grow", placeholder: "SQL WHERE, e.g. bytes > 10000 AND status >= 500", spellcheck: "false"});
  const searchButton = el("button", {type: "submit", class: "primary"}, "Search");
  const liveButton = el("button", {type: "button", class: "explore-live", title: "show new records as they land"}, "Live");
  const csvLink = el("a", {class: "button explore-download", download: "", "data-format": "csv"}, "CSV");
  const jsonLink = el("a", {class: "button explore-download", download: "", "data-format": "json"}, "JSON lines");
  const textHint = el("span", {class: "muted explore-hint"});
  const form = el(
    "form",
    {class: "explore-form"},
    el("div", {class: "toolbar"}, tableSelect, quick, fromInput, el("span", {class: "muted"}, "→"), toInput, el("span", {class: "muted"}, "UTC"), searchButton, liveButton, el("span", {class: "spacer"}), el("span", {class: "muted"}, "Download"), csvLink, jsonLink),
    el("div", {class: "toolbar"}, qInput, whereInput),
  );

  // -- the results --
  const summary = el("div", {class: "explore-summary"});
  const sqlText = el("pre", {class: "explore-sql"});
  const histogramBox = el("div", {class: "chart explore-histogram"});
  const tailNote = el("span", {class: "explore-tail muted", hidden: true});
  const gridBox = el("div", {class: "explore-grid"});
  const results = el(
    "section",
    {class: "explore-results"},
    el("div", {class: "explore-summary-row"}, summary, tailNote, el("details", {class: "explore-sql-box"}, el("summary", {}, "SQL"), sqlText)),
    histogramBox,
    gridBox,
  );
  const fieldList = el("div", {class: "explore-field-list"});
  const topBox = el("div", {class: "explore-top"});
  const side = el("aside", {class: "explore-side panel"}, el("h3", {}, "Fields"), fieldList, topBox);
  const detail = el("aside", {class: "explore-detail panel", hidden: true});
  root.append(el("div", {class: "explore"}, form, el("div", {class: "explore-main"}, side, results, detail)));

  // -- what one search holds --
  let controller = null; // aborts the requests of the search before
  let chart = null;
  let grid = null;
  let hist = null; // the histogram answer
  let tail = null; // {timer, after, seen}
  let live = false;
  let view = null; // {from, to, q, where, table} resolved for this search
  let pages = []; // [{start, count, cursor, next, rows|null}] the records below the live rows
  let loadedCount = 0; // rows of pages loaded so far (the frontier)
  let more = false; // whether pages after the frontier exist
  let tailRows = []; // live rows, newest first, above the pages
  let columns = []; // the records' column names
  let selected = null; // index of the open record
  let fetching = new Set(); // pages being fetched (by start)

  function viewParams(extra = {}) {
    const p = new URLSearchParams({table: view.table, from: view.from, to: view.to});
    if (view.q) p.set("q", view.q);
    if (view.where) p.set("where", view.where);
    for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
    return p;
  }

  function fillInputs() {
    fromInput.value = state.from;
    toInput.value = state.to;
    qInput.value = state.q;
    whereInput.value = state.where;
    quick.value = state.to === "now" && QUICK.some(([v]) => v === state.from) ? state.from : "";
    textHint.textContent = info.text_columns.length ? `free text searches ${info.text_columns.join(", ")}` : "";
    qInput.title = info.text_columns.length
      ? `field:value terms (-field:value excludes, "quote" values with spaces, colons or quotes, field:* has a value, field:>=500, path:/api/*); other words are free text, searched case-insensitively in ${info.text_columns.join(", ")}`
      : "field:value terms";
  }

  function writeUrl(push) {
    ctx.setParams(
      {table: state.table, from: state.from, to: state.to, q: state.q, where: state.where, fields: state.fields.join(",")},
      {push},
    );
  }

  function renderFieldList() {
    fieldList.replaceChildren(
      ...info.columns.map((c) =>
        el(
          "label",
          {class: "explore-field", title: `${c.name} (${c.type})`},
          el("input", {
            type: "checkbox",
            name: `field-${c.name}`,
            "data-field": c.name,
            checked: state.fields.includes(c.name),
            onchange: (event) => toggleField(c.name, event.target.checked),
          }),
          el("span", {class: "explore-field-name"}, c.name),
          el("span", {class: "tag"}, c.type.toLowerCase().split("(")[0]),
        ),
      ),
    );
  }

  function toggleField(name, on) {
    state.fields = on ? [...state.fields.filter((f) => f !== name), name] : state.fields.filter((f) => f !== name);
    writeUrl(true);
    buildGrid(true);
    loadTop().catch(showError);
  }

  // -- search --

  async function search({push = false} = {}) {
    stopTail();
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    writeUrl(push);
    const now = Date.now();
    view = {table: state.table, from: resolveTime(state.from, now), to: resolveTime(state.to, now), q: state.q, where: state.where};
    for (const link of [csvLink, jsonLink]) link.href = `/v1/explore/download?${viewParams({format: link.dataset.format})}`;
    pages = [];
    loadedCount = 0;
    more = false;
    tailRows = [];
    selected = null;
    fetching = new Set();
    detail.hidden = true;
    results.dataset.state = "loading";
    delete results.dataset.total;
    results.dataset.loaded = "0";
    summary.textContent = "searching…";
    const histogram = api(`/v1/explore/histogram?${viewParams()}`, {signal}).then((h) => {
      if (signal.aborted) return;
      hist = h;
      drawHistogram();
      results.dataset.total = String(h.total);
      sqlText.textContent = h.sql;
      renderSummary();
    });
    const first = api(`/v1/explore/records?${viewParams({limit: FIRST_PAGE})}`, {signal}).then((page) => {
      if (signal.aborted) return;
      columns = page.columns.map((c) => c.name);
      addPage(page, null);
      buildGrid(false);
    });
    loadTop(signal).catch(showError);
    try {
      await Promise.all([histogram, first]);
      if (signal.aborted) return;
      results.dataset.state = "ready";
      renderSummary();
      if (live) startTail();
    } catch (err) {
      if (err.name === "AbortError") return;
      results.dataset.state = "error";
      summary.textContent = "the search failed (see the message above)";
      showError(err);
    }
  }

  function renderSummary() {
    const parts = [];
    if (hist) {
      const total = hist.total + tailRows.length;
      parts.push(el("strong", {}, `${total.toLocaleString("en-US")} records`));
      parts.push(` from ${hist.from.slice(0, 19)} to ${hist.to.slice(0, 19)} UTC · ${hist.bucket} buckets`);
    }
    if (pages.length) {
      const shown = loadedCount + tailRows.length;
      parts.push(` · ${shown.toLocaleString("en-US")} loaded${more ? ", more as you scroll" : ", all"}`);
    }
    summary.replaceChildren(...parts);
    results.dataset.loaded = String(loadedCount + tailRows.length);
  }

  function drawHistogram() {
    const spec = {
      kind: "bar",
      x: {values: hist.times, time: true, utc: true},
      series: [{name: "records", values: hist.counts}],
      height: 130,
      onSelect: zoom,
    };
    histogramBox.dataset.counts = hist.counts.join(",");
    histogramBox.dataset.bucket = hist.bucket;
    if (chart) chart.update(spec);
    else chart = drawChart(histogramBox, spec);
  }

  function zoom(lo, hi) {
    const start = Math.max(lo, seconds(hist.from));
    const end = Math.min(hi, seconds(hist.to));
    if (!(end > start)) return;
    state.from = isoText(Math.floor(start * 1000));
    state.to = isoText(Math.ceil(end * 1000));
    if (live) setLive(false);
    fillInputs();
    search({push: true});
  }

  // -- records --

  function addPage(page, cursor) {
    const rows = rowsOf(page);
    pages.push({start: loadedCount, count: rows.length, cursor, next: page.next, rows});
    loadedCount += rows.length;
    more = !!page.next;
    evict();
  }

  // Drop the rows of pages far from the view once too many are loaded (they come back by their cursor).
  function evict() {
    let held = pages.reduce((n, p) => n + (p.rows ? p.count : 0), 0);
    if (held <= KEEP_ROWS || !grid) return;
    const middle = Math.floor(grid.body.scrollTop / ROW_HEIGHT) - tailRows.length;
    const far = pages.filter((p) => p.rows).sort((a, b) => Math.abs(b.start - middle) - Math.abs(a.start - middle));
    for (const p of far) {
      if (held <= KEEP_ROWS / 2) break;
      p.rows = null;
      held -= p.count;
    }
  }

  function pageOf(i) {
    let lo = 0;
    let hi = pages.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const p = pages[mid];
      if (i < p.start) hi = mid - 1;
      else if (i >= p.start + p.count) lo = mid + 1;
      else return p;
    }
    return null;
  }

  function rowAt(i) {
    if (i < tailRows.length) return tailRows[i];
    const j = i - tailRows.length;
    const p = pageOf(j);
    return p && p.rows ? p.rows[j - p.start] : null;
  }

  function rowCount() {
    return tailRows.length + loadedCount + (more ? Math.min(PAGE, 50) : 0);
  }

  async function need(first, last) {
    const signal = controller.signal;
    const lo = Math.max(0, first - tailRows.length);
    const hi = last - tailRows.length;
    for (const p of pages) {
      if (!p.rows && p.start <= hi && p.start + p.count > lo && !fetching.has(p.start)) refetch(p, signal);
    }
    if (more && hi >= loadedCount && !fetching.has(loadedCount)) {
      const cursor = pages[pages.length - 1].next;
      const start = loadedCount;
      fetching.add(start);
      try {
        const page = await api(`/v1/explore/records?${viewParams({limit: PAGE, cursor})}`, {signal});
        if (signal.aborted || loadedCount !== start) return;
        addPage(page, cursor);
        renderSummary();
        grid.setRowCount(rowCount());
      } catch (err) {
        if (err.name !== "AbortError") showError(err);
      } finally {
        fetching.delete(start);
      }
    }
  }

  async function refetch(p, signal) {
    fetching.add(p.start);
    try {
      const page = await api(`/v1/explore/records?${viewParams({limit: p.count, cursor: p.cursor})}`, {signal});
      if (signal.aborted) return;
      p.rows = rowsOf(page);
      grid.refresh();
    } catch (err) {
      if (err.name !== "AbortError") showError(err);
    } finally {
      fetching.delete(p.start);
    }
  }

  function shownColumns() {
    const time = info.time_column;
    const fields = state.fields.filter((f) => f !== time && columns.includes(f));
    return [time, ...fields, LINE];
  }

  function buildGrid(keepScroll) {
    if (!columns.length) return;
    const shown = shownColumns();
    const index = shown.map((name) => columns.indexOf(name));
    const widths = shown.map((name, c) => {
      if (c === 0) return 210;
      if (c === shown.length - 1) return 900;
      const type = (info.columns.find((x) => x.name === name) || {}).type || "";
      return /INT|DOUBLE|FLOAT|BOOL|DECIMAL/.test(type) ? 80 : 150;
    });
    const scroll = grid && keepScroll ? grid.body.scrollTop : 0;
    if (grid) grid.destroy();
    grid = createGrid(gridBox, {
      columns: shown,
      rowCount: rowCount(),
      widths,
      row: (i) => {
        const values = rowAt(i);
        if (!values) return null;
        return index.map((at, c) => (c < index.length - 1 ? values[at] : lineOf(record(values), info)));
      },
      onNeed: (first, last) => need(first, last),
      onRowClick: (i) => openRecord(i),
    });
    grid.body.scrollTop = scroll;
    renderSummary();
  }

  function record(values) {
    const out = {};
    columns.forEach((name, c) => (out[name] = values[c]));
    return out;
  }

  // -- top values --

  async function loadTop(signal) {
    signal = signal || (controller && controller.signal);
    if (!view) return;
    topBox.dataset.state = "loading";
    if (!state.fields.length) {
      topBox.replaceChildren(el("p", {class: "muted"}, "Tick fields to see their top values."));
      topBox.dataset.state = "ready";
      return;
    }
    try {
      const top = await api(`/v1/explore/top?${viewParams({fields: state.fields.join(",")})}`, {signal});
      if (signal && signal.aborted) return;
      renderTop(top);
      topBox.dataset.state = "ready";
    } catch (err) {
      if (err.name === "AbortError") return;
      topBox.dataset.state = "error";
      topBox.replaceChildren(el("p", {class: "muted"}, "top values failed"));
      throw err;
    }
  }

  function renderTop(top) {
    const blocks = top.fields.map((f) =>
      el(
        "div",
        {class: "explore-top-field", "data-field": f.field},
        el("h4", {}, f.field, el("span", {class: "muted"}, ` ${f.distinct.toLocaleString("en-US")} distinct`)),
        el(
          "table",
          {class: "plain"},
          el(
            "tbody",
            {},
            f.values.map((v) =>
              el(
                "tr",
                {"data-value": v.value === null ? "" : String(v.value), "data-count": v.count},
                el("td", {class: "explore-top-value", title: text(v.value)}, v.value === null ? el("em", {class: "muted"}, "null") : text(v.value)),
                el("td", {class: "num"}, v.count.toLocaleString("en-US")),
                el("td", {class: "num explore-share", title: "share of every matching record in the range"}, el("span", {class: "explore-bar", style: `width:${Math.round(v.share * 40)}px`}), `${(v.share * 100).toFixed(1)}%`),
                el(
                  "td",
                  {class: "explore-top-actions"},
                  v.include ? el("button", {type: "button", class: "include", title: `filter for ${v.include}`, onclick: () => addTerm(v.include)}, "+") : null,
                  v.exclude ? el("button", {type: "button", class: "exclude", title: `filter out: ${v.exclude}`, onclick: () => addTerm(v.exclude)}, "−") : null,
                ),
              ),
            ),
          ),
        ),
      ),
    );
    topBox.replaceChildren(
      el("p", {class: "muted explore-top-note"}, `Top ${10} values of every one of the ${top.total.toLocaleString("en-US")} matching records in the range (exact).`),
      ...blocks,
    );
  }

  function addTerm(term) {
    state.q = withTerm(state.q, term);
    fillInputs();
    search({push: true});
  }

  // -- one record --

  function openRecord(i) {
    const values = rowAt(i);
    if (!values) return;
    selected = i;
    const rec = record(values);
    const around = el("div", {class: "explore-around"});
    const sourceField = el(
      "select",
      {name: "around-field", title: "records with the same value of"},
      info.columns.map((c) => el("option", {value: c.name}, c.name)),
    );
    sourceField.value = info.source_field || info.columns[1].name;
    detail.replaceChildren(
      el("div", {class: "explore-detail-head"}, el("h3", {}, "Record"), el("span", {class: "spacer"}), el("button", {type: "button", class: "explore-close", onclick: closeRecord}, "Close")),
      el("h4", {}, info.raw === "combined" ? "Line (rebuilt in the combined log format from the fields)" : info.raw ? `Line (${info.raw})` : "Fields as JSON"),
      el("pre", {class: "explore-line"}, lineOf(rec, info)),
      el("h4", {}, "Fields"),
      el(
        "table",
        {class: "plain explore-fields-table"},
        el(
          "tbody",
          {},
          columns.map((name) => {
            const term = termText(name, rec[name]);
            return el(
              "tr",
              {"data-field": name},
              el("th", {}, name),
              el("td", {class: rec[name] === null ? "muted" : ""}, rec[name] === null ? "null" : text(rec[name])),
              el(
                "td",
                {class: "explore-top-actions"},
                term ? el("button", {type: "button", class: "include", title: `filter for ${term}`, onclick: () => addTerm(term)}, "+") : null,
                term ? el("button", {type: "button", class: "exclude", title: `filter out ${negate(term)}`, onclick: () => addTerm(negate(term))}, "−") : null,
              ),
            );
          }),
        ),
      ),
      el("h4", {}, "Records around this one"),
      el(
        "div",
        {class: "toolbar"},
        el("span", {class: "muted"}, "same"),
        sourceField,
        el("button", {type: "button", class: "explore-around-button", onclick: () => guarded(() => loadAround(rec, sourceField.value, around))}, "Show"),
      ),
      around,
    );
    detail.hidden = false;
    detail.dataset.row = String(i);
  }

  function closeRecord() {
    detail.hidden = true;
    selected = null;
  }

  async function loadAround(rec, field, box) {
    const p = new URLSearchParams({table: view.table, at: rec[info.time_column], field, n: "25"});
    if (rec[field] !== null && rec[field] !== undefined) p.set("value", typeof rec[field] === "object" ? JSON.stringify(rec[field]) : String(rec[field]));
    box.dataset.state = "loading";
    const answer = await api(`/v1/explore/around?${p}`);
    const rows = rowsOf(answer);
    const names = answer.columns.map((c) => c.name);
    const t = names.indexOf(info.time_column);
    const same = (r) => names.every((n, c) => r[c] === rec[n]);
    box.replaceChildren(
      el("p", {class: "muted"}, `${rows.length} records with ${field} = ${text(rec[field])} within a day of this one, newest first`),
      answer.note ? el("p", {class: "muted"}, answer.note) : null,
      el(
        "table",
        {class: "plain explore-around-table"},
        el(
          "tbody",
          {},
          rows.map((r) =>
            el("tr", {class: same(r) ? "explore-anchor" : ""}, el("td", {class: "mono"}, r[t]), el("td", {class: "mono"}, lineOf(Object.fromEntries(names.map((n, c) => [n, r[c]])), info))),
          ),
        ),
      ),
    );
    box.dataset.state = "ready";
    box.dataset.rows = String(rows.length);
  }

  // -- live tail --

  function setLive(on) {
    live = on;
    liveButton.textContent = on ? "Pause" : "Live";
    liveButton.classList.toggle("on", on);
    if (!on) {
      stopTail();
      tailNote.hidden = true;
      return;
    }
    if (state.to !== "now") {
      state.to = "now";
      fillInputs();
      search({push: true});
      return;
    }
    if (results.dataset.state === "ready") startTail();
  }

  function startTail() {
    stopTail();
    const first = pages[0];
    let after = view.to;
    let seen = "0";
    if (first && first.rows && first.rows.length) {
      const t = columns.indexOf(info.time_column);
      after = first.rows[0][t];
      const atNewest = first.rows.filter((r) => r[t] === after).length;
      // every record of the first page at the newest time, and more may follow: let the server count
      seen = atNewest === first.rows.length && more ? "" : String(atNewest);
    }
    tail = {after, seen, added: 0, timer: null, signal: controller.signal};
    tailNote.hidden = false;
    tailNote.textContent = "live: waiting for new records…";
    tailNote.dataset.new = "0";
    const poll = async () => {
      const mine = tail;
      if (!mine || mine.signal.aborted) return;
      let again = TAIL_EVERY_MS;
      try {
        const got = await api(`/v1/explore/tail?${viewParams({after: mine.after, seen: mine.seen, limit: 500})}`, {signal: mine.signal});
        if (tail !== mine) return;
        mine.after = got.after;
        mine.seen = String(got.seen);
        if (got.rows) addTail(rowsOf(got));
        if (got.more) again = 50;
      } catch (err) {
        if (err.name === "AbortError") return;
        showError(err);
        again = TAIL_EVERY_MS * 4;
      }
      if (tail === mine) mine.timer = setTimeout(poll, again);
    };
    tail.timer = setTimeout(poll, 0);
  }

  function stopTail() {
    if (tail && tail.timer) clearTimeout(tail.timer);
    tail = null;
  }

  function addTail(rows) {
    if (tailRows.length + rows.length > TAIL_MAX_ROWS) {
      search();
      return;
    }
    tailRows = rows.concat(tailRows);
    tail.added += rows.length;
    tailNote.textContent = `live: ${tail.added.toLocaleString("en-US")} new records`;
    tailNote.dataset.new = String(tail.added);
    if (hist) {
      const t = columns.indexOf(info.time_column);
      const size = hist.bucket_seconds;
      for (const r of rows) {
        const at = seconds(r[t]);
        let b = Math.floor((at - hist.times[0]) / size);
        while (b >= hist.times.length) {
          hist.times.push(hist.times[hist.times.length - 1] + size);
          hist.counts.push(0);
        }
        if (b >= 0) hist.counts[b] += 1;
      }
      hist.to = isoText(Date.now());
      drawHistogram();
      results.dataset.total = String(hist.total + tailRows.length);
    }
    if (grid) {
      const top = grid.body.scrollTop;
      if (top > 0) grid.body.scrollTop = top + rows.length * ROW_HEIGHT;
      grid.setRowCount(rowCount());
    }
    if (selected !== null) selected += rows.length;
    renderSummary();
  }

  // -- wiring --

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.from = fromInput.value.trim() || "now-24h";
    state.to = toInput.value.trim() || "now";
    state.q = qInput.value.trim();
    state.where = whereInput.value.trim();
    if (live && state.to !== "now") setLive(false);
    fillInputs();
    search({push: true});
  });
  quick.addEventListener("change", () => {
    if (!quick.value) return;
    state.from = quick.value;
    state.to = "now";
    fillInputs();
    search({push: true});
  });
  tableSelect.addEventListener("change", () => {
    info = byName.get(tableSelect.value);
    state.table = info.name;
    state.fields = info.default_fields.slice();
    columns = [];
    if (grid) grid.destroy();
    grid = null;
    renderFieldList();
    fillInputs();
    search({push: true});
  });
  liveButton.addEventListener("click", () => setLive(!live));
  form.querySelector(".toolbar:last-child").append(textHint);

  fillInputs();
  renderFieldList();
  search().catch(showError);

  return () => {
    stopTail();
    if (controller) controller.abort();
    if (chart) chart.destroy();
    if (grid) grid.destroy();
  };
}
