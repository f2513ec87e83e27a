// A table that stays responsive at any size: only the rows in view (plus a margin) are in the
// DOM, laid out at a fixed row height inside a spacer as tall as every row.
//
//   const grid = createGrid(container, {columns: ["ts", "status"], rowCount: 1234,
//     row: (i) => [..values..] or null while not loaded,
//     onNeed: (first, last) => load rows first..last (then call grid.refresh()),
//     onRowClick: (i, event) => ..., cell: (value, column, i) => Node or text (optional)});
//   grid.setRowCount(n); grid.refresh(); grid.destroy();
//
// The container gets data-rows (the row count) and each row element data-row (its index), which
// the end-to-end tests read.

import {el, text} from "./api.js";

export const ROW_HEIGHT = 24;

export function createGrid(container, options) {
  const {columns, onNeed, onRowClick, cell} = options;
  let rowCount = options.rowCount || 0;
  let row = options.row;
  const widths = options.widths || columns.map(() => 180);
  const header = el(
    "div",
    {class: "grid-head"},
    columns.map((name, c) => el("div", {class: "grid-cell", style: `width:${widths[c]}px`, title: name}, name)),
  );
  const spacer = el("div", {class: "grid-spacer"});
  const body = el("div", {class: "grid-body"}, spacer);
  const root = el("div", {class: "grid"}, header, body);
  container.replaceChildren(root);
  let frame = 0;

  function paint() {
    frame = 0;
    const total = widths.reduce((a, b) => a + b, 0);
    spacer.style.height = `${rowCount * ROW_HEIGHT}px`;
    spacer.style.width = `${total}px`;
    header.style.width = `${total}px`;
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - 10);
    const last = Math.min(rowCount - 1, Math.ceil((body.scrollTop + body.clientHeight) / ROW_HEIGHT) + 10);
    const rows = [];
    let missing = null;
    for (let i = first; i <= last; i++) {
      const values = row(i);
      if (values == null) {
        if (missing === null) missing = i;
        rows.push(el("div", {class: "grid-row loading", style: `top:${i * ROW_HEIGHT}px`, dataset: {row: i}}, "…"));
        continue;
      }
      rows.push(
        el(
          "div",
          {
            class: "grid-row",
            style: `top:${i * ROW_HEIGHT}px;width:${total}px`,
            dataset: {row: i},
            onclick: onRowClick ? (event) => onRowClick(i, event) : undefined,
          },
          values.map((value, c) => {
            const content = cell ? cell(value, columns[c], i) : text(value);
            return el(
              "div",
              {class: value === null || value === undefined ? "grid-cell null" : "grid-cell", style: `width:${widths[c]}px`},
              content,
            );
          }),
        ),
      );
    }
    spacer.replaceChildren(...rows);
    root.dataset.rows = rowCount;
    if (missing !== null && onNeed) onNeed(missing, last);
  }

  function refresh() {
    if (!frame) frame = requestAnimationFrame(paint);
  }

  body.addEventListener("scroll", () => {
    header.style.transform = `translateX(${-body.scrollLeft}px)`;
    refresh();
  });
  const resize = new ResizeObserver(refresh);
  resize.observe(body);
  paint();

  return {
    element: root,
    body,
    refresh,
    setRowCount(n) {
      rowCount = n;
      refresh();
    },
    setRow(fn) {
      row = fn;
      refresh();
    },
    scrollToRow(i) {
      body.scrollTop = i * ROW_HEIGHT;
      refresh();
    },
    destroy() {
      resize.disconnect();
      if (frame) cancelAnimationFrame(frame);
      root.remove();
    },
  };
}

// Column widths (px) that fit a sample of the values: a wide message column, narrow numbers.
export function fitWidths(columns, sampleRows) {
  return columns.map((name, c) => {
    let longest = name.length;
    for (const values of sampleRows.slice(0, 200)) longest = Math.max(longest, text(values[c]).length);
    return Math.max(60, Math.min(600, 8 * longest + 16));
  });
}
