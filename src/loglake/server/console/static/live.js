// The Live page: dashboards of continuous queries that follow their results as windows close.
//
// A dashboard (GET /v1/console/dashboards/NAME) is a list of panels; each names a query, a kind
// (timeseries, bar, table, stat, pie) and columns (x = the window time column or a text column,
// y = value columns, group = a column whose values become series or slices). The page loads each
// query's newest results (GET /v1/queries/Q/results, and the lake's results table through
// GET /v1/console/live/history when the server's in-memory rows are short) and then follows every
// query of the dashboard on ONE event stream (GET /v1/console/live/events?query=...): browsers keep
// at most six connections to a host, so one EventSource per query would stall the page.
//
// Results are kept per window at their latest revision: a correction (a higher revision) replaces
// the window's rows, a retraction removes the window. Firing alerts (GET /v1/alerts) and windows
// flagged by anomaly detection (is_anomaly) are marked on time charts.
//
// URL state: ?d=NAME (the dashboard shown). Dashboards of the config file and the ready-made one
// are read-only here: "Save as copy" stores an editable copy.

import {api, clearError, el, showError, text} from "./api.js";
import {drawChart, parseTime} from "./chart.js";

const RECENT_ROWS = 1000; // result rows the server keeps in memory per query
const TABLE_ROWS = 500; // rows a table panel shows at most (it says so when there are more)
const ALERT_POLL_MS = 10000;
const KINDS = ["timeseries", "bar", "table", "stat", "pie"];
const HIDDEN_COLUMNS = new Set(["revision", "retracted", "emitted_at"]);

export async function mount(root, ctx) {
  const page = el("div", {class: "live"});
  root.append(page);
  const listing = await api("/v1/console/dashboards");
  let current = null; // {name, source, read_only, title, description, panels}
  let board = null; // the running dashboard (its feeds, stream and panels)
  let stopped = false;

  const picker = el("select", {id: "live-dashboard", "aria-label": "Dashboard", onchange: () => open(picker.value, true)});
  const status = el("span", {class: "live-status muted", id: "live-status"});
  const editButton = el("button", {type: "button", id: "live-edit", onclick: () => edit(current, false)}, "Edit");
  const copyButton = el("button", {type: "button", id: "live-copy", onclick: () => edit(current, true)}, "Save as copy…");
  const newButton = el("button", {type: "button", id: "live-new", onclick: () => edit(null, false)}, "New dashboard");
  const deleteButton = el("button", {type: "button", id: "live-delete", onclick: remove}, "Delete");
  const toolbar = el("div", {class: "toolbar"}, el("label", {}, "Dashboard "), picker, status, el("span", {class: "spacer"}), newButton, editButton, copyButton, deleteButton);
  const heading = el("div", {class: "live-heading"});
  const alertsBox = el("div", {class: "panel live-alerts", id: "live-alerts"});
  const body = el("div", {class: "live-body"});
  page.append(toolbar, heading, alertsBox, body);

  function fillPicker(selected) {
    picker.replaceChildren(
      ...listing.dashboards.map((d) =>
        el("option", {value: d.name, selected: d.name === selected}, `${d.title}${d.title === d.name ? "" : ` (${d.name})`} · ${d.source}`),
      ),
    );
    if (!listing.dashboards.some((d) => d.name === selected)) picker.append(el("option", {value: "", selected: true}, "—"));
  }

  async function reloadListing() {
    Object.assign(listing, await api("/v1/console/dashboards"));
  }

  // Show dashboard `name` (push: a new history entry). A name that does not exist says so.
  async function open(name, push) {
    if (board) board.stop();
    board = null;
    current = null;
    ctx.setParams({d: name}, {push});
    fillPicker(name);
    heading.replaceChildren();
    body.replaceChildren();
    for (const b of [editButton, copyButton, deleteButton]) b.hidden = true;
    if (!name) {
      body.append(
        el("div", {class: "panel live-empty"},
          el("p", {}, "No dashboards yet."),
          el("p", {class: "muted"}, "Declare one under [dashboards.NAME] in the config file, switch on ready_queries = true on an access-log stream, or make one here with New dashboard."),
        ),
      );
      return;
    }
    try {
      current = await api(`/v1/console/dashboards/${encodeURIComponent(name)}`);
    } catch (err) {
      body.append(el("div", {class: "panel live-empty", dataset: {state: "error"}}, el("p", {class: "bad"}, err.message)));
      showError(err);
      return;
    }
    if (stopped) return;
    editButton.hidden = current.read_only;
    copyButton.hidden = !current.read_only;
    deleteButton.hidden = current.read_only;
    renderHeading(current);
    board = startBoard(current, body, alertsBox, status);
  }

  function renderHeading(d) {
    heading.replaceChildren(
      ...[
        el("h2", {id: "live-title"}, d.title || d.name),
      d.read_only ? el("span", {class: "tag", title: d.source === "config" ? "from the config file: edit it there, or save a copy" : "ready-made: save a copy to change it"}, d.source === "config" ? "config file · read-only" : "ready-made · read-only") : el("span", {class: "tag ok"}, "saved"),
        d.description ? el("p", {class: "muted live-description"}, d.description) : null,
      ].filter(Boolean),
    );
  }

  async function remove() {
    if (!current || current.read_only) return;
    if (deleteButton.dataset.confirm !== "true") {
      deleteButton.dataset.confirm = "true";
      deleteButton.textContent = `Really delete ${current.name}?`;
      setTimeout(() => {
        deleteButton.dataset.confirm = "";
        deleteButton.textContent = "Delete";
      }, 4000);
      return;
    }
    deleteButton.dataset.confirm = "";
    deleteButton.textContent = "Delete";
    try {
      await api(`/v1/console/dashboards/${encodeURIComponent(current.name)}`, {method: "DELETE"});
      await reloadListing();
      await open(listing.default || "", true);
    } catch (err) {
      showError(err);
    }
  }

  // The editor: `source` is the dashboard to start from (null: a new one); copy: save under a new
  // name (read-only dashboards are only saved that way).
  async function edit(source, copy) {
    if (board) board.stop();
    board = null;
    for (const b of [editButton, copyButton, deleteButton, newButton]) b.hidden = true;
    const queries = await api("/v1/queries").then((r) => r.queries).catch((err) => (showError(err), []));
    const draft = source
      ? JSON.parse(JSON.stringify({title: source.title, description: source.description, panels: source.panels}))
      : {title: "", description: "", panels: []};
    const fixedName = source && !copy && !source.read_only ? source.name : null;
    const editor = buildEditor({
      draft,
      queries,
      name: fixedName || (source ? `${source.name}_copy` : ""),
      nameLocked: !!fixedName,
      saveLabel: copy ? "Save copy" : "Save",
      maxPanels: listing.max_panels,
      async onSave(name, settings) {
        const saved = await api(`/v1/console/dashboards/${encodeURIComponent(name)}`, {method: "PUT", body: settings});
        await reloadListing();
        newButton.hidden = false;
        await open(saved.name, true);
      },
      onCancel() {
        newButton.hidden = false;
        open(source ? source.name : listing.default || "", false);
      },
    });
    heading.replaceChildren(el("h2", {}, copy ? `Copy of ${source.title || source.name}` : source ? `Editing ${source.title || source.name}` : "New dashboard"));
    body.replaceChildren(editor);
  }

  fillPicker(ctx.params.get("d") || listing.default || "");
  await open(ctx.params.get("d") || listing.default || "", false);
  return () => {
    stopped = true;
    if (board) board.stop();
  };
}

// ---------------------------------------------------------------------------------------------
// The running dashboard: feeds (one per query), the event stream, alerts, and the panels.

function startBoard(dashboard, container, alertsBox, status) {
  const feeds = new Map(); // query -> Feed
  const panels = [];
  const grid = el("div", {class: "live-grid", id: "live-grid"});
  container.replaceChildren(grid);
  let alerts = [];
  const firedAt = new Map(); // alert name -> Set of `since` values seen firing (markers stay after a resolution)
  let timer = null;
  let alertTimer = null;
  let frame = 0;
  const dirty = new Set();
  let stopped = false;

  if (!dashboard.panels.length) {
    grid.append(el("div", {class: "panel live-empty"}, el("p", {class: "muted"}, "This dashboard has no panels yet: Edit (or Save as copy) to add some.")));
  }
  dashboard.panels.forEach((spec, i) => {
    const panel = createPanel(spec, i);
    panels.push(panel);
    grid.append(panel.element);
    if (!feeds.has(spec.query)) feeds.set(spec.query, newFeed(spec.query));
    const feed = feeds.get(spec.query);
    feed.want = Math.max(feed.want, spec.windows);
  });

  function schedule(query) {
    dirty.add(query);
    if (!frame) frame = requestAnimationFrame(paint);
  }

  function paint() {
    frame = 0;
    for (const panel of panels) {
      if (dirty.has(panel.spec.query)) panel.render(feeds.get(panel.spec.query), alerts, firedAt);
    }
    dirty.clear();
  }

  async function loadAlerts() {
    try {
      const reply = await api("/v1/alerts");
      if (stopped) return;
      alerts = reply.alerts;
      for (const a of alerts) {
        if (a.state === "firing" && a.since) {
          if (!firedAt.has(a.name)) firedAt.set(a.name, new Set());
          firedAt.get(a.name).add(a.since);
        }
      }
      renderAlerts(alertsBox, alerts, feeds);
      for (const q of feeds.keys()) schedule(q);
    } catch (err) {
      if (!stopped) showError(err);
    }
  }

  // A query's results since the server started (in memory), then older windows from the lake
  // when those are fewer than the panels show.
  async function load(feed) {
    try {
      const recent = await api(`/v1/queries/${encodeURIComponent(feed.query)}/results?limit=${RECENT_ROWS}`);
      let rows = recent.rows;
      if (rows.length >= RECENT_ROWS) rows = withoutOldestWindow(rows); // the oldest may be cut
      merge(feed, rows);
      if (windowsOf(feed).length < feed.want) {
        const older = await api(`/v1/console/live/history?query=${encodeURIComponent(feed.query)}&windows=${feed.want}`);
        merge(feed, older.rows);
        feed.truncated = older.truncated;
      }
      feed.error = null;
    } catch (err) {
      feed.error = err.message;
    }
    feed.loaded = true;
    schedule(feed.query);
  }

  let source = null;
  function connect() {
    if (stopped || !feeds.size) return;
    const url = "/v1/console/live/events?" + [...feeds.keys()].map((q) => `query=${encodeURIComponent(q)}`).join("&");
    source = new EventSource(url);
    source.addEventListener("hello", () => {
      status.textContent = "● live";
      status.className = "live-status ok";
      status.dataset.state = "live";
      // Loaded after the stream is subscribed: no window falls between the two.
      for (const feed of feeds.values()) load(feed);
    });
    source.addEventListener("result", (event) => {
      const data = JSON.parse(event.data);
      const feed = feeds.get(data.query);
      if (!feed) return;
      merge(feed, data.rows);
      feed.updates += 1;
      schedule(feed.query);
      if (alerts.some((a) => a.query === data.query)) {
        clearTimeout(alertTimer);
        alertTimer = setTimeout(loadAlerts, 200);
      }
    });
    source.onerror = () => {
      if (stopped) return;
      status.textContent = "reconnecting…";
      status.className = "live-status warn";
      status.dataset.state = "reconnecting";
      // EventSource reconnects by itself; "hello" then reloads what was missed.
    };
  }

  loadAlerts();
  connect();
  timer = setInterval(loadAlerts, ALERT_POLL_MS);
  if (!feeds.size) {
    status.textContent = "";
    status.dataset.state = "";
  }

  return {
    feeds,
    stop() {
      stopped = true;
      if (source) source.close();
      clearInterval(timer);
      clearTimeout(alertTimer);
      if (frame) cancelAnimationFrame(frame);
      for (const panel of panels) panel.destroy();
      status.textContent = "";
    },
  };
}

function newFeed(query) {
  return {query, windows: new Map(), want: 1, loaded: false, error: null, truncated: false, updates: 0};
}

// ---------------------------------------------------------------------------------------------
// Windows at their latest revision.

function windowKey(row) {
  return row.window_key === undefined ? String(row.window_start) : `${row.window_start}\u0000${JSON.stringify(row.window_key)}`;
}

function compareVersion(a, b) {
  if (a.revision !== b.revision) return a.revision - b.revision;
  return a.emitted < b.emitted ? -1 : a.emitted > b.emitted ? 1 : 0;
}

// Merge result rows (a batch of the event stream, the in-memory results or the lake's) into the
// feed: per window, the rows of its highest (revision, emitted_at) win as a whole; a retracted
// window is removed. Merging the same rows twice changes nothing.
function merge(feed, rows) {
  const groups = new Map();
  for (const row of rows) {
    const key = windowKey(row);
    const version = {revision: Number(row.revision) || 0, emitted: String(row.emitted_at || "")};
    const group = groups.get(key);
    if (!group || compareVersion(version, group) > 0) {
      groups.set(key, {...version, rows: [row], retracted: !!row.retracted, start: parseTime(row.window_start)});
    } else if (compareVersion(version, group) === 0) {
      group.rows.push(row);
    }
  }
  for (const [key, group] of groups) {
    const known = feed.windows.get(key);
    if (!known || compareVersion(group, known) >= 0) feed.windows.set(key, group);
  }
  // Keep what the panels show, and a margin for windows corrected out of order.
  const all = [...feed.windows.entries()].sort((a, b) => a[1].start - b[1].start);
  const keep = Math.max(feed.want, 1) + 20;
  for (const [key] of all.slice(0, Math.max(0, all.length - keep))) feed.windows.delete(key);
}

function withoutOldestWindow(rows) {
  let oldest = null;
  for (const row of rows) if (oldest === null || parseTime(row.window_start) < oldest) oldest = parseTime(row.window_start);
  return rows.filter((row) => parseTime(row.window_start) !== oldest);
}

// The feed's windows that are not retracted, oldest first.
function windowsOf(feed) {
  return [...feed.windows.values()].filter((w) => !w.retracted).sort((a, b) => a.start - b.start);
}

// ---------------------------------------------------------------------------------------------
// Panels.

function createPanel(spec, index) {
  const title = el("h3", {class: "live-panel-title"}, spec.title || spec.query);
  const badges = el("div", {class: "live-badges"});
  const note = el("div", {class: "live-note muted"});
  const content = el("div", {class: "live-content"});
  const element = el(
    "section",
    {class: `panel live-panel kind-${spec.kind}`, style: `grid-column: span ${spec.width}`, dataset: {panel: index, query: spec.query, kind: spec.kind, state: "loading"}},
    el("div", {class: "live-panel-head"}, title, el("span", {class: "spacer"}), el("span", {class: "tag", title: "continuous query"}, spec.query)),
    badges,
    content,
    note,
  );
  content.append(el("p", {class: "muted live-message"}, "Loading…"));
  let chart = null;
  let chartBox = null;
  let chartKey = "";

  function message(state, textValue) {
    if (chart) chart.destroy();
    chart = null;
    chartKey = "";
    element.dataset.state = state;
    content.replaceChildren(el("p", {class: state === "error" ? "live-message bad" : "muted live-message"}, textValue));
  }

  function render(feed, alerts, firedAt) {
    const firing = alerts.filter((a) => a.query === spec.query && a.state === "firing");
    badges.replaceChildren(...firing.map((a) => el("span", {class: "tag bad", dataset: {alert: a.name}}, `${a.name} firing`)));
    element.classList.toggle("firing", firing.length > 0);
    note.textContent = feed.truncated ? "older windows were cut at [console] max_rows" : "";
    if (feed.error) return message("error", feed.error);
    if (!feed.loaded) return;
    let windows = windowsOf(feed);
    if (!windows.length) {
      element.dataset.windows = "0";
      return message("empty", `Waiting for the first window of ${spec.query}: a window's result comes once the watermark passes its end.`);
    }
    windows = windows.slice(-spec.windows);
    element.dataset.windows = String(windows.length);
    element.dataset.last = String(windows[windows.length - 1].rows[0].window_start);
    const columns = Object.keys(windows[windows.length - 1].rows[0] || {});
    const named = [spec.kind === "table" ? null : spec.x, ...spec.y, spec.group].filter(Boolean);
    const unknown = named.filter((c) => !columns.includes(c));
    if (unknown.length) {
      return message("error", `${unknown.map((c) => `'${c}'`).join(", ")} not among the results of ${spec.query}: ${columns.filter((c) => !HIDDEN_COLUMNS.has(c)).join(", ")}`);
    }
    element.dataset.state = "ok";
    if (spec.kind === "stat") return renderStat(windows);
    if (spec.kind === "table") return renderTable(windows, columns);
    const markers = markersOf(windows, spec.query, alerts, firedAt);
    const built = spec.kind === "pie" ? pieSpec(spec, windows) : chartSpec(spec, windows, markers);
    drawInto(built);
  }

  function drawInto(built) {
    // A category axis draws its labels when it is built: rebuild it on every change.
    const key = `${built.kind}|${built.x.time}|${built.series.length}`;
    if (chart && key === chartKey && built.x.time) {
      chart.update(built);
      return;
    }
    if (chart) chart.destroy();
    chartBox = el("div", {class: "chart"});
    content.replaceChildren(chartBox);
    chart = drawChart(chartBox, built);
    chartKey = key;
  }

  function renderStat(windows) {
    if (chart) chart.destroy();
    chart = null;
    chartKey = "";
    const last = windows[windows.length - 1];
    const column = spec.y[0];
    let value = null;
    for (const row of last.rows) {
      const v = row[column];
      if (v === null || v === undefined) continue;
      value = typeof v === "number" ? (value || 0) + v : v;
    }
    content.replaceChildren(
      el("div", {class: "stat-value", dataset: {value: value === null ? "" : String(value), window: String(last.rows[0].window_start)}}, formatValue(value)),
      el("div", {class: "stat-window muted"}, `${column} · window ${windowText(last.rows[0])}`),
    );
  }

  function renderTable(windows, columns) {
    if (chart) chart.destroy();
    chart = null;
    chartKey = "";
    const shown = spec.y.length ? spec.y : columns.filter((c) => !HIDDEN_COLUMNS.has(c));
    const rows = [];
    let total = 0;
    for (const w of [...windows].reverse()) {
      for (const row of w.rows) {
        total += 1;
        if (rows.length < TABLE_ROWS) rows.push(row);
      }
    }
    const numeric = shown.map((c) => rows.some((r) => typeof r[c] === "number"));
    const table = el(
      "table",
      {class: "plain live-table", dataset: {rows: rows.length}},
      el("thead", {}, el("tr", {}, shown.map((c, i) => el("th", {class: numeric[i] ? "num" : ""}, c)))),
      el(
        "tbody",
        {},
        rows.map((row) => el("tr", {class: row.is_anomaly === true ? "anomaly" : ""}, shown.map((c, i) => el("td", {class: numeric[i] ? "num" : ""}, c.startsWith("window_") ? shortTime(row[c]) : formatCell(row[c]))))),
      ),
    );
    content.replaceChildren(el("div", {class: "live-table-box"}, table));
    if (total > rows.length) content.append(el("p", {class: "muted"}, `the newest ${rows.length} of ${total} rows`));
  }

  return {
    spec,
    element,
    render,
    destroy() {
      if (chart) chart.destroy();
    },
  };
}

function isTime(value) {
  return typeof value === "string" && /^\d{4}-\d\d-\d\d[T ]\d\d:\d\d/.test(value) && parseTime(value) !== null;
}

// A time or bar chart: over windows when x is a time column, else over the categories (x values)
// of the newest window. With a group column, one series per group value (and value column).
function chartSpec(spec, windows, markers) {
  const kind = spec.kind === "bar" ? "bar" : "line";
  const time = isTime(windows[windows.length - 1].rows[0][spec.x]);
  const rows = time ? windows.flatMap((w) => w.rows) : windows[windows.length - 1].rows;
  const xs = [];
  const index = new Map();
  for (const row of rows) {
    const x = time ? parseTime(row[spec.x]) : text(row[spec.x]);
    if (!index.has(x)) {
      index.set(x, xs.length);
      xs.push(x);
    }
  }
  if (time) {
    xs.sort((a, b) => a - b);
    xs.forEach((x, i) => index.set(x, i));
    // The axis ends where the newest window ends (an x without values), so that a single window
    // still has a sensible range and the newest point is not drawn on the edge.
    const newest = windows[windows.length - 1].rows[0];
    const span = parseTime(newest.window_end) - parseTime(newest.window_start);
    if (span > 0) xs.push(xs[xs.length - 1] + span);
  }
  const series = new Map();
  for (const row of rows) {
    const at = index.get(time ? parseTime(row[spec.x]) : text(row[spec.x]));
    for (const y of spec.y) {
      const name = spec.group ? (spec.y.length > 1 ? `${text(row[spec.group])} ${y}` : text(row[spec.group])) : y;
      if (!series.has(name)) series.set(name, new Array(xs.length).fill(null));
      const values = series.get(name);
      const v = row[y];
      if (typeof v === "number") values[at] = (values[at] || 0) + v;
    }
  }
  const names = [...series.keys()];
  if (spec.group) names.sort();
  return {
    kind,
    x: {values: xs, time, utc: true}, // labelled in UTC, as the console writes every time
    xLabel: spec.x,
    series: names.map((name) => ({name, values: series.get(name)})),
    height: 200,
    legend: names.length > 1,
    markers: time ? markers : [],
  };
}

// A pie of the newest window: slices are the values of the group column (or of a text x column),
// else the value columns themselves.
function pieSpec(spec, windows) {
  const rows = windows[windows.length - 1].rows;
  const label = spec.group || (!isTime(rows[0][spec.x]) ? spec.x : "");
  const slices = new Map();
  for (const row of rows) {
    for (const y of label ? [spec.y[0]] : spec.y) {
      const name = label ? text(row[label]) : y;
      const v = row[y];
      if (typeof v === "number") slices.set(name, (slices.get(name) || 0) + v);
    }
  }
  const names = [...slices.keys()].sort();
  return {kind: "pie", x: {values: names, time: false}, series: [{name: spec.y[0], values: names.map((n) => slices.get(n))}], height: 200};
}

// Markers on a time chart: every window flagged is_anomaly, and the windows where the query's
// alerts started firing (the current firing, and earlier ones seen while the page was open).
function markersOf(windows, query, alerts, firedAt) {
  const markers = [];
  for (const w of windows) {
    const flagged = w.rows.find((r) => r.is_anomaly === true);
    if (!flagged) continue;
    const score = flagged.anomaly_score;
    markers.push({x: w.start, label: typeof score === "number" ? `anomaly ${score.toFixed(1)}` : "anomaly", kind: "anomaly"});
  }
  for (const a of alerts) {
    if (a.query !== query) continue;
    for (const since of firedAt.get(a.name) || []) {
      const now = a.state === "firing" && a.since === since;
      markers.push({x: parseTime(since), label: `${a.name} ${now ? "firing" : "fired"}`, kind: "alert"});
    }
  }
  return markers;
}

// ---------------------------------------------------------------------------------------------
// Alerts.

function renderAlerts(box, alerts, feeds) {
  const order = {firing: 0, pending: 1, inactive: 2};
  const sorted = [...alerts].sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3) || a.name.localeCompare(b.name));
  const firing = alerts.filter((a) => a.state === "firing").length;
  box.dataset.firing = String(firing);
  if (!alerts.length) {
    box.replaceChildren(el("h3", {}, "Alerts"), el("p", {class: "muted"}, "No alert rules: declare them under [alerts.NAME] in the config file (docs/analytics.md, Alerts)."));
    return;
  }
  box.replaceChildren(
    el("h3", {}, "Alerts ", firing ? el("span", {class: "tag bad"}, `${firing} firing`) : el("span", {class: "tag ok"}, "none firing")),
    el(
      "table",
      {class: "plain"},
      el("thead", {}, el("tr", {}, ["alert", "state", "since (window)", "query", "when", "for", "fired", "resolved", "severity"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        sorted.map((a) =>
          el(
            "tr",
            {dataset: {alert: a.name, state: a.state, since: a.since || ""}, class: feeds.has(a.query) ? "on-board" : ""},
            el("td", {}, a.name),
            el("td", {}, el("span", {class: `tag ${a.state === "firing" ? "bad" : a.state === "pending" ? "warn" : "ok"}`}, a.state)),
            el("td", {}, a.since ? shortTime(a.since) : "—"),
            el("td", {}, a.query),
            el("td", {class: "mono"}, a.when),
            el("td", {class: "num"}, String(a.for)),
            el("td", {class: "num"}, String(a.fired)),
            el("td", {class: "num"}, String(a.resolved)),
            el("td", {}, a.severity),
          ),
        ),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// The editor.

function buildEditor({draft, queries, name, nameLocked, saveLabel, maxPanels, onSave, onCancel}) {
  const columnsOf = new Map(); // query -> Promise of its result columns (for suggestions)
  const nameInput = el("input", {id: "live-name", value: name, placeholder: "name: letters, digits, _ and -", pattern: "[A-Za-z0-9_-]{1,64}", disabled: nameLocked, required: true});
  const titleInput = el("input", {id: "live-title-input", class: "grow", value: draft.title, placeholder: "title"});
  const description = el("textarea", {id: "live-description", rows: 2, placeholder: "description (optional)"}, draft.description);
  const list = el("div", {class: "live-editor-panels"});
  const queryList = el("datalist", {id: "live-queries"}, queries.map((q) => el("option", {value: q.name}, `${q.stream} · ${q.window}`)));
  const addButton = el("button", {type: "button", id: "live-add-panel", onclick: () => {
    draft.panels.push({title: "", query: queries.length ? queries[0].name : "", kind: "timeseries", x: "window_start", y: [], group: "", windows: 60, width: 6});
    paint();
  }}, "Add panel");
  const saveButton = el("button", {type: "button", class: "primary", id: "live-save", onclick: save}, saveLabel);
  const cancelButton = el("button", {type: "button", id: "live-cancel", onclick: onCancel}, "Cancel");
  const form = el(
    "div",
    {class: "panel live-editor", id: "live-editor"},
    el("div", {class: "toolbar"}, el("label", {}, "Name ", nameInput), el("label", {class: "grow"}, "Title ", titleInput)),
    description,
    queryList,
    list,
    el("div", {class: "toolbar"}, addButton, el("span", {class: "spacer"}), cancelButton, saveButton),
  );

  function suggestions(query) {
    if (!query) return Promise.resolve([]);
    if (!columnsOf.has(query)) {
      columnsOf.set(
        query,
        api(`/v1/queries/${encodeURIComponent(query)}/results?limit=1`)
          .then((r) => (r.rows.length ? Object.keys(r.rows[0]).filter((c) => !HIDDEN_COLUMNS.has(c)) : []))
          .catch(() => []),
      );
    }
    return columnsOf.get(query);
  }

  function field(label, input) {
    return el("label", {class: "live-field"}, el("span", {class: "muted"}, label), input);
  }

  function paint() {
    addButton.disabled = draft.panels.length >= maxPanels;
    list.replaceChildren(
      ...draft.panels.map((p, i) => {
        const listId = `live-cols-${i}`;
        const columns = el("datalist", {id: listId});
        suggestions(p.query).then((cols) => columns.replaceChildren(...cols.map((c) => el("option", {value: c}))));
        const set = (key, parse = (v) => v) => (event) => {
          p[key] = parse(event.target.value);
          if (key === "query") suggestions(p.query).then((cols) => columns.replaceChildren(...cols.map((c) => el("option", {value: c}))));
        };
        const split = (v) => v.split(",").map((s) => s.trim()).filter(Boolean);
        return el(
          "div",
          {class: "live-editor-panel", dataset: {panel: i}},
          columns,
          el(
            "div",
            {class: "live-fields"},
            field("title", el("input", {name: "title", value: p.title, oninput: set("title")})),
            field("query", el("input", {name: "query", value: p.query, list: "live-queries", oninput: set("query")})),
            field("kind", el("select", {name: "kind", onchange: set("kind")}, KINDS.map((k) => el("option", {value: k, selected: k === p.kind}, k)))),
            field("x", el("input", {name: "x", value: p.x, list: listId, oninput: set("x")})),
            field("y (comma-separated)", el("input", {name: "y", value: p.y.join(", "), list: listId, oninput: set("y", split)})),
            field("group", el("input", {name: "group", value: p.group, list: listId, oninput: set("group")})),
            field("windows", el("input", {name: "windows", type: "number", min: 1, max: 1000, value: p.windows, oninput: set("windows", Number)})),
            field("width /12", el("input", {name: "width", type: "number", min: 1, max: 12, value: p.width, oninput: set("width", Number)})),
          ),
          el(
            "div",
            {class: "live-panel-actions"},
            el("button", {type: "button", title: "Move up", disabled: i === 0, onclick: () => move(i, -1)}, "↑"),
            el("button", {type: "button", title: "Move down", disabled: i === draft.panels.length - 1, onclick: () => move(i, 1)}, "↓"),
            el("button", {type: "button", class: "live-remove", onclick: () => {
              draft.panels.splice(i, 1);
              paint();
            }}, "Remove"),
          ),
        );
      }),
    );
    if (!draft.panels.length) list.append(el("p", {class: "muted"}, "No panels: Add panel, then pick a query and its columns."));
  }

  function move(i, by) {
    const [p] = draft.panels.splice(i, 1);
    draft.panels.splice(i + by, 0, p);
    paint();
  }

  async function save() {
    const target = nameInput.value.trim();
    if (!target) {
      showError("name the dashboard: 1-64 letters, digits, '_' or '-'");
      nameInput.focus();
      return;
    }
    saveButton.disabled = true;
    clearError();
    try {
      await onSave(target, {title: titleInput.value.trim(), description: description.value.trim(), panels: draft.panels});
    } catch (err) {
      showError(err);
    } finally {
      saveButton.disabled = false;
    }
  }

  paint();
  return form;
}

// ---------------------------------------------------------------------------------------------
// Formatting.

function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return text(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toLocaleString("en-US", {maximumFractionDigits: Math.abs(value) < 1 ? 4 : 2});
}

function formatCell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return formatValue(value);
  return text(value);
}

// A window's span, "2024-03-01 10:01:00–10:02:00 UTC" (the date once when both ends share it).
function windowText(row) {
  const start = shortTime(row.window_start);
  const end = shortTime(row.window_end);
  return `${start}–${end.slice(0, 10) === start.slice(0, 10) ? end.slice(11) : end} UTC`;
}

// "2024-03-01T10:01:00" → "2024-03-01 10:01:00" (UTC, as the server sends it).
function shortTime(value) {
  if (value === null || value === undefined) return "";
  return String(value).replace("T", " ").replace(/\.\d+$/, "");
}
