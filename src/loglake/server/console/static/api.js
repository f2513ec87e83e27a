// Calls to loglake's JSON API from the console, and the one place errors are shown.
//
// Every API error has one shape: {"error": {"code": "...", "message": "..."}}. api() turns it into
// an ApiError whose message is the server's own; showError() puts any error in the banner at the
// top of the page, so a failure is always a readable message, never a blank page.

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let pending = 0;

function busy(delta) {
  pending += delta;
  const el = document.getElementById("busy");
  if (el) el.hidden = pending <= 0;
}

// fetch() a loglake API path and return its JSON. body (an object) is sent as JSON with POST unless
// method says otherwise. Throws ApiError with the server's message; a 401 sends the browser to the
// sign-in page. signal (an AbortSignal) cancels the request.
export async function api(path, {method, body, signal} = {}) {
  const init = {method: method || (body === undefined ? "GET" : "POST"), signal, headers: {}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  busy(1);
  let reply;
  try {
    reply = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(`the server did not answer (${err.message}); is loglake serve running?`, 0, "network");
  } finally {
    busy(-1);
  }
  if (reply.status === 401) {
    location.href = "/console/login";
    throw new ApiError("sign in with an API key", 401, "unauthorized");
  }
  const text = await reply.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!reply.ok) {
    const message = data && data.error ? data.error.message : `${reply.status} ${reply.statusText}: ${text.slice(0, 200)}`;
    const code = data && data.error ? data.error.code : "http";
    throw new ApiError(message, reply.status, code);
  }
  return data;
}

// Show err (an Error or a string) in the page's error banner; ignored for aborted requests.
export function showError(err) {
  if (err && err.name === "AbortError") return;
  const banner = document.getElementById("error");
  if (!banner) return;
  banner.querySelector(".error-text").textContent = typeof err === "string" ? err : err.message || String(err);
  banner.hidden = false;
}

export function clearError() {
  const banner = document.getElementById("error");
  if (banner) banner.hidden = true;
}

// Run fn (async) and show any error it throws in the banner; returns fn's value or undefined.
export async function guarded(fn) {
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// A result in the console's JSON shape ({columns, data, rows}) as an array of row arrays.
export function rowsOf(result) {
  const out = new Array(result.rows);
  for (let i = 0; i < result.rows; i++) out[i] = result.data.map((col) => col[i]);
  return out;
}

// Create an element: el("div", {class: "x", onclick: fn}, child, "text", ...).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Text of a value as the tables show it (null as an empty, greyed cell is done by the caller).
export function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
