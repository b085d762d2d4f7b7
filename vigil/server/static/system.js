// System (administrators): models and their checksums, sinks and the outbox, cameras, watchlist and retention
// settings; users and API tokens; the audit log with filters.
import { api, clear, field, formatTime, h, localToIso, notice, showError } from "./common.js";

const AUDIT_PAGE = 100;
let auditNext = null;

function row(...cells) {
  return h("tr", {}, ...cells.map((cell) => (cell instanceof Node ? h("td", {}, cell) : h("td", {}, cell ?? ""))));
}

function facts(element, pairs) {
  clear(element);
  for (const [term, value] of pairs) element.append(h("dt", {}, term), h("dd", {}, value ?? "—"));
}

async function loadSystem() {
  const system = await api("system");
  document.getElementById("version").textContent = `vigil ${system.version}`;
  const models = document.querySelector("#models tbody");
  clear(models).append(...system.models.map((m) => row(m.kind, m.name, h("code", { class: "checksum" }, m.sha256))));
  const cameras = document.querySelector("#cameras tbody");
  clear(cameras).append(...system.cameras.map((c) => row(c.name, h("code", {}, c.source))));
  facts(document.getElementById("sinks"), [
    ["sinks", system.sinks.join(", ") || "none"],
    ["outbox pending", system.outbox.pending],
    ["outbox delivered", system.outbox.delivered],
    ["outbox dead", system.outbox.dead],
  ]);
  const r = system.retention;
  facts(document.getElementById("settings"), [
    ["watchlist", system.watchlist.path],
    ["people enrolled", system.watchlist.people],
    ["loaded", formatTime(system.watchlist.loaded_at)],
    ["reload error", system.watchlist.error || "none"],
    ["retention", `alerts ${r.alerts_days} d, unknown faces ${r.unknown_events_days} d, snapshots ${r.snapshots_days} d, audit ${r.audit_days} d`],
    ["retention last run", formatTime(r.last_run) || "not yet"],
    ["listen", `${system.server.listen}${system.server.tls ? " (TLS)" : ""}`],
    ["operators can enrol", system.server.operators_can_enroll ? "yes" : "no"],
  ]);
}

function userActions(user) {
  const error = h("span", { class: "error", role: "alert" });
  const change = async (json) => {
    error.textContent = "";
    try {
      await api(`users/${encodeURIComponent(user.username)}`, { method: "PATCH", json });
      await loadUsers();
    } catch (failure) {
      error.textContent = failure.message;
    }
  };
  const role = h("select", { "aria-label": `role of ${user.username}` }, ...["viewer", "operator", "admin"].map((name) => h("option", { value: name, selected: name === user.role }, name)));
  role.addEventListener("change", () => change({ role: role.value }));
  const toggle = h("button", { type: "button", class: "quiet small", onclick: () => change({ disabled: !user.disabled }) }, user.disabled ? "Enable" : "Disable");
  const remove = h("button", {
    type: "button",
    class: "danger small",
    onclick: async () => {
      if (!window.confirm(`Delete user ${user.username}?`)) return;
      try {
        await api(`users/${encodeURIComponent(user.username)}`, { method: "DELETE" });
        await loadUsers();
      } catch (failure) {
        error.textContent = failure.message;
      }
    },
  }, "Delete");
  return h("span", { class: "row" }, role, toggle, remove, error);
}

async function loadUsers() {
  const users = await api("users");
  const body = document.querySelector("#users tbody");
  clear(body).append(...users.items.map((u) => row(u.username, u.role, u.disabled ? "disabled" : "active", formatTime(u.created_at), userActions(u))));
}

async function loadTokens() {
  const tokens = await api("tokens");
  const body = document.querySelector("#tokens tbody");
  clear(body).append(
    ...tokens.items.map((t) => {
      const revoke = t.active
        ? h("button", {
            type: "button",
            class: "danger small",
            onclick: async () => {
              try {
                await api(`tokens/${t.id}`, { method: "DELETE" });
                await loadTokens();
              } catch (failure) {
                notice(failure.message, "error");
              }
            },
          }, "Revoke")
        : "";
      const state = t.active ? "active" : t.revoked_at ? `revoked ${formatTime(t.revoked_at)}` : "expired";
      return row(h("code", {}, t.id), t.name, t.role, formatTime(t.created_at), formatTime(t.last_used_at) || "never", state, revoke);
    }),
  );
}

function auditQuery(cursor) {
  const form = document.getElementById("audit-filters");
  const params = new URLSearchParams({ limit: String(AUDIT_PAGE) });
  for (const name of ["actor", "action", "object", "outcome"]) {
    const value = field(form, name).value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const value = localToIso(field(form, name).value);
    if (value) params.set(name, value);
  }
  if (cursor) params.set("cursor", String(cursor));
  return `audit?${params}`;
}

async function loadAudit(append) {
  const form = document.getElementById("audit-filters");
  const error = form.querySelector(".form-error");
  showError(error, null);
  try {
    const page = await api(auditQuery(append ? auditNext : null));
    const body = document.querySelector("#audit tbody");
    if (!append) clear(body);
    body.append(...page.items.map((e) => row(formatTime(e.ts), e.actor, e.role, e.client, e.action, e.object, h("span", { class: `outcome-${e.outcome}` }, e.outcome), e.detail)));
    auditNext = page.next;
    document.getElementById("audit-more").hidden = !page.next;
  } catch (failure) {
    showError(error, failure);
  }
}

function onSubmit(id, send) {
  const form = document.getElementById(id);
  const error = form.querySelector(".form-error");
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    showError(error, null);
    try {
      await send(form);
      form.reset();
    } catch (failure) {
      showError(error, failure);
    }
  });
}

function main() {
  if (!document.getElementById("system-page")) return;
  onSubmit("user-form", async (form) => {
    const json = { username: field(form, "username").value.trim(), role: field(form, "role").value, password: field(form, "password").value };
    await api("users", { method: "POST", json });
    await loadUsers();
  });
  onSubmit("token-form", async (form) => {
    const json = { role: field(form, "role").value, name: field(form, "name").value.trim() };
    if (field(form, "expires_days").value) json.expires_days = Number(field(form, "expires_days").value);
    const token = await api("tokens", { method: "POST", json });
    const secret = document.getElementById("token-secret");
    clear(secret).append("New token (shown this once; copy it now): ", h("code", {}, token.secret));
    secret.hidden = false;
    await loadTokens();
  });
  document.getElementById("audit-filters").addEventListener("submit", (submit) => {
    submit.preventDefault();
    loadAudit(false);
  });
  document.getElementById("audit-more").addEventListener("click", () => loadAudit(true));
  Promise.all([loadSystem(), loadUsers(), loadTokens(), loadAudit(false)]).catch((failure) => notice(failure.message, "error"));
}

main();
