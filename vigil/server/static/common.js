// vigil's page helpers: the API client (session cookie + CSRF header), a DOM builder that only ever makes text
// nodes from data (never parsed as HTML), time formatting, and the header's log-out button.

const API = "/api/v1";
const STREAM_RETRY_MS = 5000;

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

function meta(name) {
  const element = document.querySelector(`meta[name="${name}"]`);
  return element ? element.content : "";
}

export const session = {
  user: meta("vigil-user"),
  role: meta("vigil-role"),
  csrf: meta("vigil-csrf"),
  permissions: new Set(meta("vigil-permissions").split(" ").filter(Boolean)),
};

export function can(permission) {
  return session.permissions.has(permission);
}

export function toLogin() {
  const here = window.location.pathname;
  window.location.assign(`/login?next=${encodeURIComponent(here)}`);
}

// One call to the API. `json` is sent as a JSON body, `form` as multipart; writes carry the CSRF token.
export async function api(path, { method = "GET", json, form } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (method !== "GET") headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
    method,
    headers,
    body,
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = {};
  const type = response.headers.get("content-type") || "";
  if (type.includes("application/json")) data = await response.json();
  if (response.status === 401 && !path.includes("auth/login")) {
    toLogin();
    throw new ApiError(401, "your session ended: log in again", data);
  }
  if (!response.ok) throw new ApiError(response.status, data.error || `HTTP ${response.status}`, data);
  return data;
}

// h("p", {class: "x", onclick: fn}, "text", child): data goes in as text nodes, never as HTML.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key === "text") element.textContent = String(value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

export function formatTime(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return String(iso);
  return moment.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (Number.isNaN(seconds)) return "";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

// A datetime-local input's value as an ISO time with zone (the API refuses times without one), or "".
export function localToIso(value) {
  if (!value) return "";
  const moment = new Date(value);
  return Number.isNaN(moment.getTime()) ? "" : moment.toISOString();
}

export function notice(message, kind = "info") {
  const element = document.getElementById("notice");
  if (!element) return;
  element.textContent = message;
  element.className = `notice ${kind}`;
  element.hidden = !message;
}

export function showError(element, error) {
  element.textContent = error ? error.message || String(error) : "";
  element.hidden = !error;
}

// A Server-Sent Events connection to /api/v1/stream with its state shown in `stateElement`; `onOpen` runs on every
// reconnection so the page can fetch what it missed. The browser retries a dropped stream by itself; a refused one
// (the session ended, the server restarted) is retried here every few seconds, or sends the browser to the login.
export function openStream(handlers, stateElement, onOpen) {
  const show = (text, live) => {
    if (!stateElement) return;
    stateElement.textContent = text;
    stateElement.classList.toggle("live", live);
  };
  let opened = false;
  const connect = () => {
    const source = new EventSource(`${API}/stream`);
    source.addEventListener("open", () => {
      show("live", true);
      if (opened && onOpen) onOpen();
      opened = true;
    });
    source.addEventListener("error", () => {
      show("reconnecting…", false);
      if (source.readyState !== EventSource.CLOSED) return;
      api("auth/me") // a 401 here sends the browser to the login page
        .then(() => setTimeout(connect, STREAM_RETRY_MS))
        .catch(() => setTimeout(connect, STREAM_RETRY_MS));
    });
    for (const [kind, handler] of Object.entries(handlers)) {
      source.addEventListener(kind, (message) => handler(JSON.parse(message.data)));
    }
  };
  connect();
}

function setUpHeader() {
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    try {
      await api("auth/logout", { method: "POST" });
    } finally {
      window.location.assign("/login");
    }
  });
}

setUpHeader();

// A form's control by name (form.name / form.id would be the form's own attributes).
export function field(form, name) {
  return form.elements.namedItem(name);
}
