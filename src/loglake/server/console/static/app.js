// The console's shell: picks the page from the URL path, mounts its module, keeps the URL's query
// string as the page's state (so any view can be bookmarked and shared) and wires the error banner.
//
// A page module exports mount(root, ctx) and may return an unmount function. ctx gives:
//   ctx.params          URLSearchParams of the current URL (the page's state)
//   ctx.setParams(obj, {push})  write state into the URL (replace by default; push adds history)
//   ctx.info            GET /v1/console ({version, auth, pages, max_rows})

import {api, clearError, showError} from "./api.js";

const PAGES = {
  explore: () => import("./explore.js"),
  live: () => import("./live.js"),
  notebooks: () => import("./notebooks.js"),
  catalog: () => import("./catalog.js"),
};

let unmount = null;
let info = null;

function pageName() {
  const name = location.pathname.replace(/^\/console\/?/, "").split("/")[0];
  return name in PAGES ? name : "explore";
}

function setParams(values, {push = false} = {}) {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined || value === null || value === "") params.delete(key);
    else params.set(key, String(value));
  }
  const url = `${location.pathname}${params.toString() ? "?" + params : ""}`;
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

async function render() {
  const name = pageName();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  document.title = `loglake · ${name[0].toUpperCase()}${name.slice(1)}`;
  if (unmount) {
    try {
      unmount();
    } catch (err) {
      console.error(err);
    }
    unmount = null;
  }
  clearError();
  const root = document.getElementById("page");
  root.replaceChildren();
  root.dataset.page = name;
  delete root.dataset.ready;
  try {
    const module = await PAGES[name]();
    const ctx = {params: new URLSearchParams(location.search), setParams, info};
    unmount = (await module.mount(root, ctx)) || null;
    root.dataset.ready = "true";
  } catch (err) {
    showError(err);
  }
}

async function start() {
  document.querySelector("#error .error-close").addEventListener("click", clearError);
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
  window.addEventListener("error", (event) => showError(event.error || event.message));
  // Links inside the console change the page without reloading it.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[href^='/console/']");
    if (!link || link.target || link.hasAttribute("download") || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    history.pushState(null, "", link.getAttribute("href"));
    render();
  });
  window.addEventListener("popstate", render);
  try {
    info = await api("/v1/console");
    document.getElementById("signout").hidden = !info.auth;
  } catch (err) {
    showError(err);
  }
  await render();
}

start();
