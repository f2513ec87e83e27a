// The notebooks page (Apache Zeppelin's job): paragraphs of SQL (DuckDB or Athena dialect) with
// markdown between them. Run one (its Run button, Ctrl+Enter or Shift+Enter in its editor) or all
// in order; a SQL result shows as a virtual table (grid.js) or a chart (chart.js: line, bar, area,
// pie, scatter; x, y and group by as Zeppelin's pivot does them); a result downloads as CSV or
// JSON lines (run again server-side and streamed, not cut at [console] max_rows).
//
// Notebooks live on the server (/v1/notebooks, notebooks.py); changes are saved a second after
// the last edit (and by Save or Ctrl+S), with the revision they were read at, so two pages never
// overwrite each other silently. The URL holds the open notebook (?id=...), so it can be
// bookmarked. Results are not saved: opening a notebook runs nothing until asked.
//
// Test hooks: .nb-page[data-save] is saved|dirty|saving|error; each .nb-para has data-id,
// data-kind, data-view and data-state (idle|running|done|error); a chart's container has
// data-kind and data-points (chart.js), a table's .grid data-rows (grid.js).

import {api, el, showError, text} from "./api.js";
import {createGrid, fitWidths} from "./grid.js";
import {drawChart, pivot} from "./chart.js";

const VIEWS = [
  ["table", "Table"],
  ["line", "Line"],
  ["bar", "Bar"],
  ["area", "Area"],
  ["pie", "Pie"],
  ["scatter", "Scatter"],
];
const DIALECTS = [
  ["duckdb", "DuckDB"],
  ["athena", "Athena"],
];
const SAVE_DELAY_MS = 1000;
const CHART_HEIGHT = 260;
const NUMERIC = /^(u?int|int|float|double|decimal|halffloat)/;

export async function mount(root, ctx) {
  const page = el("div", {class: "nb-page", dataset: {save: "saved"}});
  const list = el("ul", {class: "nb-list"});
  const count = el("div", {class: "nb-count muted"});
  const fileInput = el("input", {type: "file", accept: ".json,application/json", hidden: true, onchange: () => importFile()});
  const side = el(
    "aside",
    {class: "nb-side panel"},
    el("h2", {}, "Notebooks"),
    el(
      "div",
      {class: "toolbar"},
      el("button", {type: "button", class: "primary nb-new", onclick: () => create({name: "Untitled"})}, "New"),
      el("button", {type: "button", class: "nb-starter", title: "A notebook of a few questions over logs.access", onclick: () => create({starter: true})}, "Starter"),
      el("button", {type: "button", class: "nb-import", title: "Import a notebook exported as JSON", onclick: () => fileInput.click()}, "Import…"),
      fileInput,
    ),
    list,
    count,
  );
  const body = el("section", {class: "nb-main"});
  page.append(side, body);
  root.append(page);

  let notebooks = [];
  let limit = 0;
  let nb = null; // the open notebook: {id, name, revision, ...} and paras (paragraph views)
  let paras = [];
  let dirty = false;
  let saving = null;
  let again = false;
  let stopped = false; // a save refused (conflict): no more automatic saves until reloaded
  let timer = 0;

  function setSave(value) {
    page.dataset.save = value;
    const label = {saved: "Saved", dirty: "Unsaved changes", saving: "Saving…", error: "Not saved"}[value];
    const node = body.querySelector(".nb-state");
    if (node) {
      node.textContent = label;
      node.className = `nb-state tag ${value === "error" ? "bad" : value === "saved" ? "ok" : "warn"}`;
    }
  }

  function changed() {
    dirty = true;
    setSave("dirty");
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(() => save(), SAVE_DELAY_MS);
  }

  function payload() {
    return {name: nb.name, paragraphs: paras.map((p) => p.data), revision: nb.revision};
  }

  // Save the open notebook now (one save at a time; edits made meanwhile are saved right after).
  async function save() {
    clearTimeout(timer);
    if (saving) {
      again = true;
      return saving;
    }
    if (!nb || !dirty) return;
    const id = nb.id;
    dirty = false;
    setSave("saving");
    saving = (async () => {
      try {
        const doc = await api(`/v1/notebooks/${id}`, {method: "PUT", body: payload()});
        if (nb && nb.id === id) {
          nb.revision = doc.revision;
          nb.updated = doc.updated;
        }
        upsert({id: doc.id, name: doc.name, paragraphs: doc.paragraphs.length, updated: doc.updated, created: doc.created});
        setSave(dirty ? "dirty" : "saved");
      } catch (err) {
        dirty = true;
        if (err.status === 409 || err.status === 413 || err.status === 400) stopped = true;
        setSave("error");
        showError(err);
      } finally {
        saving = null;
      }
      if (again && !stopped) {
        again = false;
        await save();
      }
    })();
    return saving;
  }

  // -- the list --------------------------------------------------------------------------------

  function upsert(summary) {
    const at = notebooks.findIndex((n) => n.id === summary.id);
    if (at >= 0) notebooks[at] = {...notebooks[at], ...summary};
    else notebooks.unshift(summary);
    notebooks.sort((a, b) => (a.updated < b.updated ? 1 : a.updated > b.updated ? -1 : 0));
    drawList();
  }

  function drawList() {
    list.replaceChildren(
      ...notebooks.map((n) =>
        el(
          "li",
          {class: nb && nb.id === n.id ? "active" : "", dataset: {id: n.id}},
          el(
            "a",
            {href: `/console/notebooks?id=${n.id}`, title: n.problem || n.name, onclick: (event) => follow(event, n.id)},
            n.name,
          ),
          el("span", {class: "muted"}, n.problem ? "unreadable" : `${n.paragraphs} ¶ · ${when(n.updated)}`),
        ),
      ),
    );
    count.textContent = notebooks.length ? `${notebooks.length} of at most ${limit}` : "No notebooks yet.";
  }

  function follow(event, id) {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button) return;
    event.preventDefault();
    event.stopPropagation(); // the shell would remount the page; opening here keeps the list
    open(id, {push: true});
  }

  async function loadList() {
    const reply = await api("/v1/notebooks");
    notebooks = reply.notebooks;
    limit = reply.max_notebooks;
    drawList();
  }

  async function create(spec) {
    try {
      await save();
      const doc = await api("/v1/notebooks", {body: spec});
      upsert({id: doc.id, name: doc.name, paragraphs: doc.paragraphs.length, updated: doc.updated, created: doc.created});
      await open(doc.id, {push: true, doc});
      if (!spec.starter) focusFirst();
    } catch (err) {
      showError(err);
    }
  }

  async function importFile() {
    const file = fileInput.files[0];
    fileInput.value = "";
    if (!file) return;
    try {
      let value;
      try {
        value = JSON.parse(await file.text());
      } catch (err) {
        throw new Error(`${file.name} is not JSON (${err.message}): import a file that Export JSON saved`);
      }
      await save();
      const doc = await api("/v1/notebooks/import", {body: value});
      upsert({id: doc.id, name: doc.name, paragraphs: doc.paragraphs.length, updated: doc.updated, created: doc.created});
      await open(doc.id, {push: true, doc});
    } catch (err) {
      showError(err);
    }
  }

  // -- one notebook -------------------------------------------------------------------------------

  async function open(id, {push = false, doc = null} = {}) {
    await save();
    close();
    if (push) ctx.setParams({id}, {push: true});
    if (!id) {
      drawHome();
      return;
    }
    try {
      nb = doc || (await api(`/v1/notebooks/${encodeURIComponent(id)}`));
    } catch (err) {
      nb = null;
      drawHome();
      showError(err);
      return;
    }
    dirty = false;
    stopped = false;
    drawList();
    drawNotebook();
  }

  function close() {
    clearTimeout(timer);
    for (const p of paras) p.dispose();
    paras = [];
    nb = null;
    body.replaceChildren();
  }

  function drawHome() {
    drawList();
    const none = !notebooks.length;
    body.replaceChildren(
      el(
        "div",
        {class: "panel nb-home"},
        el("h2", {}, none ? "No notebooks yet" : "Open a notebook from the list, or start one"),
        el(
          "p",
          {},
          "A notebook is SQL paragraphs over the lake (DuckDB or Athena SQL) with markdown notes between them. ",
          "Each result shows as a table or a chart (line, bar, area, pie, scatter) and downloads as CSV or JSON lines.",
        ),
        none ? el("p", {class: "muted"}, "The starter notebook asks a few questions of logs.access, each drawn as a chart.") : null,
        el(
          "div",
          {class: "toolbar"},
          el("button", {type: "button", class: "primary", onclick: () => create({starter: true})}, "Open the starter notebook"),
          el("button", {type: "button", onclick: () => create({name: "Untitled"})}, "New notebook"),
          el("button", {type: "button", onclick: () => fileInput.click()}, "Import JSON…"),
        ),
      ),
    );
  }

  function drawNotebook() {
    const name = el("input", {
      class: "nb-name",
      value: nb.name,
      maxlength: 120,
      "aria-label": "Notebook name",
      onchange: () => rename(name),
      onkeydown: (event) => {
        if (event.key === "Enter") name.blur();
      },
    });
    const head = el(
      "div",
      {class: "nb-head toolbar"},
      name,
      el("span", {class: "nb-state tag ok"}, "Saved"),
      el("span", {class: "spacer"}),
      el("button", {type: "button", class: "primary nb-run-all", title: "Run every paragraph, in order", onclick: () => runAll()}, "▶ Run all"),
      el("button", {type: "button", class: "nb-save", title: "Save (Ctrl+S)", onclick: () => saveNow()}, "Save"),
      el("a", {class: "button nb-export", href: `/v1/notebooks/${nb.id}/export`, download: "", title: "Download this notebook as JSON (Import takes it back)"}, "Export JSON"),
      el("button", {type: "button", class: "nb-delete", onclick: () => remove()}, "Delete"),
    );
    const holder = el("div", {class: "nb-paragraphs"});
    const foot = el(
      "div",
      {class: "nb-add toolbar"},
      el("button", {type: "button", class: "nb-add-sql", onclick: () => insert(paras.length, "sql")}, "+ SQL"),
      el("button", {type: "button", class: "nb-add-md", onclick: () => insert(paras.length, "markdown")}, "+ Markdown"),
      el("span", {class: "muted"}, "Ctrl+Enter runs a paragraph · Ctrl+S saves"),
    );
    body.replaceChildren(head, holder, foot);
    paras = nb.paragraphs.map((data) => paragraph(data));
    holder.append(...paras.map((p) => p.node));
    setSave("saved");
    document.title = `loglake · ${nb.name}`;
  }

  function focusFirst() {
    const editor = body.querySelector(".nb-para textarea");
    if (editor) editor.focus();
  }

  function rename(input) {
    const value = input.value.trim();
    if (!value) {
      input.value = nb.name;
      showError("a notebook needs a name");
      return;
    }
    if (value === nb.name) return;
    nb.name = value;
    document.title = `loglake · ${nb.name}`;
    dirty = true;
    save();
  }

  async function saveNow() {
    stopped = false;
    dirty = true;
    await save();
  }

  async function remove() {
    if (!nb) return;
    if (!confirm(`Delete the notebook "${nb.name}"? Export it first to keep a copy.`)) return;
    const id = nb.id;
    try {
      clearTimeout(timer);
      if (saving) await saving;
      dirty = false;
      await api(`/v1/notebooks/${id}`, {method: "DELETE"});
      notebooks = notebooks.filter((n) => n.id !== id);
      close();
      ctx.setParams({id: null}, {push: true});
      drawHome();
      setSave("saved");
    } catch (err) {
      showError(err);
    }
  }

  function insert(at, kind) {
    const data = kind === "sql" ? {id: newId(), kind, text: "", dialect: "duckdb", view: "table", chart: {x: "", y: "", group: ""}} : {id: newId(), kind, text: ""};
    const p = paragraph(data, {editing: true});
    paras.splice(at, 0, p);
    const holder = body.querySelector(".nb-paragraphs");
    holder.insertBefore(p.node, holder.children[at] || null);
    p.editor.focus();
    changed();
  }

  function move(p, delta) {
    const at = paras.indexOf(p);
    const to = at + delta;
    if (to < 0 || to >= paras.length) return;
    paras.splice(at, 1);
    paras.splice(to, 0, p);
    const holder = body.querySelector(".nb-paragraphs");
    holder.insertBefore(p.node, holder.children[delta > 0 ? to + 1 : to] || null);
    changed();
  }

  function drop(p) {
    if (p.data.text.trim() && !confirm("Delete this paragraph?")) return;
    p.dispose();
    paras.splice(paras.indexOf(p), 1);
    p.node.remove();
    changed();
  }

  async function runAll() {
    const button = body.querySelector(".nb-run-all");
    if (button) button.disabled = true;
    try {
      for (const p of [...paras]) {
        if (!nb || !paras.includes(p)) break; // the notebook was closed meanwhile
        await p.run();
      }
    } finally {
      if (button) button.disabled = false;
    }
  }

  // -- one paragraph ------------------------------------------------------------------------------

  function paragraph(data, {editing = false} = {}) {
    const p = {data, result: null, error: null, view: null, abort: null};
    const sql = data.kind === "sql";
    const editor = el("textarea", {
      class: "nb-editor",
      spellcheck: "false",
      placeholder: sql ? "SELECT ... FROM logs.access  (Ctrl+Enter runs it)" : "Markdown: # heading, **bold**, *italic*, `code`, - lists, [links](https://...)",
      oninput: () => {
        data.text = editor.value;
        grow();
        changed();
      },
      onkeydown: (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey || event.shiftKey)) {
          event.preventDefault();
          p.run();
        }
      },
    });
    editor.value = data.text;
    const dialect = sql
      ? el(
          "select",
          {
            class: "nb-dialect",
            title: "SQL dialect",
            onchange: () => {
              data.dialect = dialect.value;
              changed();
            },
          },
          DIALECTS.map(([value, label]) => el("option", {value, selected: value === data.dialect}, label)),
        )
      : null;
    if (dialect && !DIALECTS.some(([value]) => value === data.dialect)) {
      dialect.append(el("option", {value: data.dialect, selected: true}, data.dialect));
    }
    const out = el("div", {class: "nb-out"});
    const node = el(
      "div",
      {class: `nb-para panel ${sql ? "sql" : "markdown"}`, dataset: {id: data.id, kind: data.kind, view: data.view || "", state: "idle"}},
      el(
        "div",
        {class: "nb-para-head"},
        el("span", {class: "tag"}, sql ? "SQL" : "Markdown"),
        dialect,
        el("span", {class: "spacer"}),
        el("button", {type: "button", class: "primary nb-run", title: sql ? "Run (Ctrl+Enter)" : "Show (Ctrl+Enter)", onclick: () => p.run()}, "▶ Run"),
        sql ? null : el("button", {type: "button", class: "nb-edit", onclick: () => setEditing(true)}, "Edit"),
        el("button", {type: "button", class: "icon", title: "Move up", onclick: () => move(p, -1)}, "↑"),
        el("button", {type: "button", class: "icon", title: "Move down", onclick: () => move(p, 1)}, "↓"),
        el("button", {type: "button", class: "icon", title: "Add a SQL paragraph below", onclick: () => insert(paras.indexOf(p) + 1, "sql")}, "+SQL"),
        el("button", {type: "button", class: "icon", title: "Add a markdown paragraph below", onclick: () => insert(paras.indexOf(p) + 1, "markdown")}, "+MD"),
        el("button", {type: "button", class: "icon nb-drop", title: "Delete this paragraph", onclick: () => drop(p)}, "×"),
      ),
      editor,
      out,
    );
    Object.assign(p, {node, editor, out, run, dispose});

    function grow() {
      const lines = editor.value.split("\n").length;
      editor.rows = Math.max(3, Math.min(30, lines + 1));
    }
    grow();

    function setEditing(on) {
      if (sql) return;
      editor.hidden = !on;
      node.classList.toggle("editing", on);
      if (on) editor.focus();
    }

    if (!sql) {
      // A markdown paragraph shows its text rendered; double-click (or Edit) shows its source.
      out.addEventListener("dblclick", () => setEditing(true));
      renderMarkdownInto(out, data.text);
      setEditing(editing || !data.text.trim());
    }

    async function run() {
      if (!sql) {
        renderMarkdownInto(out, data.text);
        setEditing(!data.text.trim());
        node.dataset.state = "done";
        return;
      }
      if (p.abort) p.abort.abort();
      const abort = (p.abort = new AbortController());
      const statement = data.text;
      const chosen = data.dialect;
      node.dataset.state = "running";
      const started = performance.now();
      try {
        const result = await api("/v1/sql", {body: {sql: statement, dialect: chosen}, signal: abort.signal});
        p.result = result;
        p.error = null;
        p.ran = {sql: statement, dialect: chosen, seconds: (performance.now() - started) / 1000};
      } catch (err) {
        if (err.name === "AbortError") return;
        p.result = null;
        p.error = err.message || String(err);
      } finally {
        if (p.abort === abort) p.abort = null;
      }
      draw();
      node.dataset.state = p.error ? "error" : "done";
    }

    function dispose() {
      if (p.abort) p.abort.abort();
      if (p.view) p.view.destroy();
      p.view = null;
    }

    function draw() {
      if (p.view) p.view.destroy();
      p.view = null;
      if (p.error) {
        out.replaceChildren(el("pre", {class: "nb-error", role: "alert"}, p.error));
        return;
      }
      const result = p.result;
      if (!result) {
        out.replaceChildren();
        return;
      }
      const names = result.columns.map((c) => c.name);
      const area = el("div", {class: "nb-view"});
      const settings = el("span", {class: "nb-settings"});
      const views = el(
        "span",
        {class: "nb-views", role: "group"},
        VIEWS.map(([value, label]) =>
          el(
            "button",
            {
              type: "button",
              class: data.view === value ? "active" : "",
              dataset: {view: value},
              onclick: () => {
                if (data.view === value) return;
                data.view = value;
                node.dataset.view = value;
                changed();
                draw();
              },
            },
            label,
          ),
        ),
      );
      const meta = el(
        "span",
        {class: "nb-meta muted"},
        `${result.rows.toLocaleString("en")} row${result.rows === 1 ? "" : "s"} · ${p.ran.seconds.toFixed(2)} s`,
      );
      const downloads = el(
        "span",
        {class: "nb-downloads"},
        el("button", {type: "button", class: "nb-csv", title: "Every row, run again on the server (up to [query] max_rows)", onclick: () => download("csv")}, "CSV"),
        el("button", {type: "button", class: "nb-jsonl", title: "Every row, run again on the server (up to [query] max_rows)", onclick: () => download("json")}, "JSON lines"),
      );
      out.replaceChildren(el("div", {class: "nb-result-bar toolbar"}, views, settings, el("span", {class: "spacer"}), meta, downloads));
      if (result.note) out.append(el("div", {class: "nb-note tag warn"}, result.note));
      out.append(area);
      if (data.view === "table" || !result.columns.length) {
        const rows = Math.min(result.rows, 200);
        const sample = [];
        for (let i = 0; i < rows; i++) sample.push(result.data.map((col) => col[i]));
        const box = el("div", {class: "nb-table", style: `height:${Math.min(360, Math.max(120, 30 + result.rows * 24))}px`});
        area.append(box);
        p.view = createGrid(box, {
          columns: names,
          rowCount: result.rows,
          row: (i) => result.data.map((col) => col[i]),
          widths: fitWidths(names, sample),
        });
        return;
      }
      const chart = chartSettings(result, data.chart);
      if (JSON.stringify(chart) !== JSON.stringify(data.chart)) {
        data.chart = chart;
        changed();
      }
      const pick = (key, label, optional) =>
        el(
          "label",
          {},
          label,
          el(
            "select",
            {
              class: `nb-${key}`,
              onchange: (event) => {
                data.chart = {...data.chart, [key]: event.target.value};
                changed();
                draw();
              },
            },
            optional ? el("option", {value: "", selected: !data.chart[key]}, "(none)") : null,
            names.map((name) => el("option", {value: name, selected: data.chart[key] === name}, name)),
          ),
        );
      settings.append(pick("x", "x", false), pick("y", "y", false), pick("group", "group by", true));
      const box = el("div", {class: "chart nb-chart"});
      area.append(box);
      try {
        const spec = chartSpec(result, data.view, data.chart);
        if (!drawable(spec)) {
          const column = result.columns.find((c) => c.name === data.chart.y);
          area.prepend(el("div", {class: "nb-note tag warn"}, `nothing to draw: y (${data.chart.y}, ${column ? column.type : "?"}) has no numbers${data.view === "pie" ? " above zero" : ""}; choose a numeric column`));
        }
        p.view = drawChart(box, {...spec, height: CHART_HEIGHT});
      } catch (err) {
        box.replaceChildren(el("p", {class: "nb-error"}, err.message));
      }
    }

    function download(format) {
      // A form POST into a hidden frame: the browser streams the answer to a file (nothing is
      // held in the page), and an error (JSON) lands in the frame, where it is read back.
      if (!p.ran) return;
      const frameName = `nb-download-${data.id}`;
      let frame = document.querySelector(`iframe[name="${frameName}"]`);
      if (!frame) {
        frame = el("iframe", {name: frameName, class: "nb-frame", hidden: true, title: "download"});
        document.body.append(frame);
        frame.addEventListener("load", () => {
          let message = "";
          try {
            const reply = JSON.parse(frame.contentDocument.body.textContent);
            message = reply.error ? reply.error.message : "";
          } catch (_) {
            message = "";
          }
          if (!message) return;
          const old = out.querySelector(".nb-download-error");
          if (old) old.remove();
          out.prepend(el("pre", {class: "nb-error nb-download-error", role: "alert"}, `download: ${message}`));
        });
      }
      const stem = `${nb ? nb.name : "result"}-${paras.indexOf(p) + 1}`;
      const form = el(
        "form",
        {method: "post", action: "/v1/sql/download", target: frameName, hidden: true},
        el("input", {type: "hidden", name: "sql", value: p.ran.sql}),
        el("input", {type: "hidden", name: "dialect", value: p.ran.dialect}),
        el("input", {type: "hidden", name: "format", value: format}),
        el("input", {type: "hidden", name: "name", value: stem}),
      );
      document.body.append(form);
      form.submit();
      form.remove();
    }

    return p;
  }

  // -- keyboard and leaving -----------------------------------------------------------------------

  function onKey(event) {
    if ((event.ctrlKey || event.metaKey) && event.key === "s" && nb) {
      event.preventDefault();
      saveNow();
    }
  }

  function onLeave(event) {
    if (nb && (dirty || saving)) {
      event.preventDefault();
      event.returnValue = "";
    }
  }

  document.addEventListener("keydown", onKey);
  window.addEventListener("beforeunload", onLeave);

  await loadList();
  const wanted = ctx.params.get("id");
  if (wanted) await open(wanted);
  else drawHome();

  return () => {
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("beforeunload", onLeave);
    if (dirty && nb) save(); // leaving for another page: keep the edits
    for (const p of paras) p.dispose();
  };
}

// -- charts ---------------------------------------------------------------------------------------

// The x, y and group by of a chart: the saved ones when the result has those columns, else x the
// first column, y the first numeric column after it, no group.
export function chartSettings(result, saved) {
  const names = result.columns.map((c) => c.name);
  const has = (name) => name && names.includes(name);
  const x = has(saved && saved.x) ? saved.x : names[0];
  const numeric = result.columns.filter((c) => NUMERIC.test(c.type) && c.name !== x).map((c) => c.name);
  const y = has(saved && saved.y) ? saved.y : numeric[0] || names.find((n) => n !== x) || x;
  const group = has(saved && saved.group) ? saved.group : "";
  return {x, y, group};
}

// The chart.js spec of a result: Zeppelin's pivot (y summed per x and group). Bars are drawn per
// category (x values as labels, evenly spaced); a pie has one slice per x value, or per x and
// group value when grouped.
export function chartSpec(result, kind, {x, y, group}) {
  if (kind === "pie") return pieSpec(result, {x, y, group});
  const spec = pivot(result, {x, y, group, kind});
  if (kind === "bar" && !spec.x.time) spec.x = {values: spec.x.values.map((v) => text(v)), time: false};
  for (const one of spec.series) one.values = one.values.map((v) => (Number.isFinite(v) ? v : null)); // text is no point
  spec.legend = !!group;
  return spec;
}

// Whether a chart spec has anything to draw.
function drawable(spec) {
  return spec.series.some((one) => one.values.some((v) => v !== null && (spec.kind !== "pie" || v > 0)));
}

function pieSpec(result, {x, y, group}) {
  const names = result.columns.map((c) => c.name);
  const xi = names.indexOf(x);
  const yi = names.indexOf(y);
  const gi = group ? names.indexOf(group) : -1;
  if (xi < 0 || yi < 0) throw new Error(`choose x and y among the result's columns: ${names.join(", ")}`);
  const sums = new Map();
  for (let r = 0; r < result.rows; r++) {
    const label = gi >= 0 ? `${text(result.data[xi][r])} · ${text(result.data[gi][r])}` : text(result.data[xi][r]);
    const value = result.data[yi][r] === null ? NaN : Number(result.data[yi][r]);
    if (!Number.isFinite(value)) continue;
    sums.set(label, (sums.get(label) || 0) + value);
  }
  return {kind: "pie", x: {values: [...sums.keys()], time: false}, series: [{name: y, values: [...sums.values()]}]};
}

// -- markdown -------------------------------------------------------------------------------------

// Render a safe subset of markdown into container: headings, paragraphs, **bold**, *italic*,
// `code`, fenced code blocks, lists, > quotes, --- rules and [links](url). Every piece of text
// becomes a text node (no HTML is ever parsed, so <script> shows as text); links keep only
// http(s), mailto and relative targets.
export function renderMarkdownInto(container, source) {
  container.replaceChildren(el("div", {class: "nb-markdown"}, markdown(source)));
}

export function markdown(source) {
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let paragraph = [];
  let list = null; // {node, ordered}
  const endParagraph = () => {
    if (paragraph.length) out.push(el("p", {}, inline(paragraph.join(" "))));
    paragraph = [];
  };
  const endList = () => {
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = /^\s*(```|~~~)/.exec(line);
    if (fence) {
      endParagraph();
      endList();
      const code = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) code.push(lines[i++]);
      out.push(el("pre", {}, el("code", {}, code.join("\n"))));
      continue;
    }
    if (!line.trim()) {
      endParagraph();
      endList();
      continue;
    }
    const heading = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      endParagraph();
      endList();
      out.push(el(`h${heading[1].length}`, {}, inline(heading[2])));
      continue;
    }
    if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      endParagraph();
      endList();
      out.push(el("hr"));
      continue;
    }
    const item = /^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/.exec(line);
    if (item) {
      endParagraph();
      const ordered = !item[1];
      if (!list || list.ordered !== ordered) {
        const node = el(ordered ? "ol" : "ul");
        if (ordered && item[2] !== "1") node.setAttribute("start", String(Number(item[2])));
        list = {node, ordered};
        out.push(node);
      }
      list.node.append(el("li", {}, inline(item[3])));
      continue;
    }
    if (list && /^\s+\S/.test(line)) {
      // a continuation of the list item above
      const last = list.node.lastElementChild;
      last.append(" ", ...inline(line.trim()));
      continue;
    }
    const quote = /^\s{0,3}>\s?(.*)$/.exec(line);
    if (quote) {
      endParagraph();
      endList();
      const prev = out[out.length - 1];
      if (prev && prev.tagName === "BLOCKQUOTE") prev.append(" ", ...inline(quote[1]));
      else out.push(el("blockquote", {}, inline(quote[1])));
      continue;
    }
    endList();
    paragraph.push(line.trim());
  }
  endParagraph();
  return out;
}

const ESCAPABLE = "\\`*_{}[]()#+-.!>~|";

// Inline markdown as DOM nodes: `code`, **strong**, *em* / _em_, [text](url), \-escapes.
export function inline(src) {
  const out = [];
  let buf = "";
  const flush = () => {
    if (buf) out.push(document.createTextNode(buf));
    buf = "";
  };
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === "\\" && i + 1 < src.length && ESCAPABLE.includes(src[i + 1])) {
      buf += src[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      let n = 1;
      while (src[i + n] === "`") n++;
      const ticks = "`".repeat(n);
      const end = src.indexOf(ticks, i + n);
      if (end > i + n - 1 && end >= 0) {
        flush();
        let code = src.slice(i + n, end);
        if (code.startsWith(" ") && code.endsWith(" ") && code.trim()) code = code.slice(1, -1);
        out.push(el("code", {}, code));
        i = end + n;
        continue;
      }
      buf += ticks;
      i += n;
      continue;
    }
    if ((c === "*" || c === "_") && src[i + 1] === c && src[i + 2] && src[i + 2] !== " ") {
      const end = src.indexOf(c + c, i + 2);
      if (end > i + 2 && src[end - 1] !== " ") {
        flush();
        out.push(el("strong", {}, inline(src.slice(i + 2, end))));
        i = end + 2;
        continue;
      }
    }
    if ((c === "*" || c === "_") && src[i + 1] && src[i + 1] !== " " && src[i + 1] !== c) {
      // _ only at a word's edge: snake_case names stay as they are
      const opens = c === "*" || !/[A-Za-z0-9]/.test(src[i - 1] || " ");
      let end = -1;
      for (let j = i + 1; opens && j < src.length; j++) {
        if (src[j] === c && src[j - 1] !== " " && src[j + 1] !== c && src[j - 1] !== c && (c === "*" || !/[A-Za-z0-9]/.test(src[j + 1] || " "))) {
          end = j;
          break;
        }
      }
      if (end > i + 1) {
        flush();
        out.push(el("em", {}, inline(src.slice(i + 1, end))));
        i = end + 1;
        continue;
      }
    }
    if (c === "[") {
      const link = /^\[([^\]\n]+)\]\(\s*([^()\s]+)\s*\)/.exec(src.slice(i));
      if (link) {
        flush();
        const href = safeUrl(link[2]);
        const label = inline(link[1]);
        if (href) {
          const external = /^(https?:|mailto:)/i.test(href);
          out.push(el("a", {href, target: external ? "_blank" : null, rel: external ? "noopener noreferrer" : null}, label));
        } else {
          out.push(...label);
        }
        i += link[0].length;
        continue;
      }
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

// url when it is http(s), mailto or relative (no scheme); null for javascript:, data: and others.
function safeUrl(url) {
  const trimmed = url.trim();
  // Browsers ignore tabs and newlines inside a scheme ("java\tscript:"): judge the URL without them.
  const plain = trimmed.replace(/[\u0000-\u0020]/g, "");
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(plain);
  if (scheme) return ["http", "https", "mailto"].includes(scheme[1].toLowerCase()) ? trimmed : null;
  return trimmed;
}

// -- small helpers --------------------------------------------------------------------------------

function newId() {
  return "p" + Math.random().toString(16).slice(2, 10).padEnd(8, "0");
}

function when(iso) {
  if (!iso) return "";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const seconds = (Date.now() - t) / 1000;
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(t).toISOString().slice(0, 10);
}
