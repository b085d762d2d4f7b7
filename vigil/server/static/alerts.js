// Alerts: newest first, live over Server-Sent Events. Each row shows the captured face beside the enrolled photo of
// the person it matched; the person and the camera are the largest text. Acknowledge with a note, "not this person"
// (the API's false-match mark), the full snapshot on click; unknown faces in their own tab.
import { api, field, ago, can, clear, formatTime, h, localToIso, notice, openStream, showError } from "./common.js";

const PAGE_SIZE = 30;
const AGO_REFRESH_MS = 10000;
const state = { type: "alert", filters: {}, next: null, shown: new Set() };
const events = document.getElementById("events");

const LIST_LABELS = { deny: "deny list", vip: "VIP", allow: "allow list" };

function query(cursor) {
  const params = new URLSearchParams({ type: state.type, limit: String(PAGE_SIZE) });
  for (const [key, value] of Object.entries(state.filters)) if (value) params.set(key, value);
  if (cursor) params.set("cursor", cursor);
  return `events?${params}`;
}

function matchesFilters(event) {
  const f = state.filters;
  if (event.type !== state.type) return false;
  if (f.camera && event.camera !== f.camera) return false;
  if (f.person && event.person_id !== f.person) return false;
  if (f.since && event.ts < f.since) return false;
  if (f.until && event.ts >= f.until) return false;
  return true;
}

function faceFigure(url, caption, alt, hiddenReason, onClick) {
  let content;
  if (url) {
    const image = h("img", { src: url, alt, loading: "lazy", width: 112, height: 112 });
    content = onClick ? h("button", { type: "button", class: "snapshot-button", onclick: onClick, title: "open the full snapshot" }, image) : image;
  } else {
    content = h("div", { class: "face-placeholder" }, hiddenReason);
  }
  return h("figure", { class: "face" }, content, h("figcaption", {}, caption));
}

function markText(kind, mark) {
  const note = mark.note ? `: “${mark.note}”` : "";
  return `${kind} by ${mark.by.replace(/^user:/, "")} at ${formatTime(mark.at)}${note}`;
}

function snapshotHiddenReason(event) {
  if (!event.has_snapshot) return "no snapshot";
  return event.type === "unknown" ? "hidden for your role (face matched nobody)" : "hidden for your role";
}

function openSnapshot(event) {
  const dialog = document.getElementById("snapshot-dialog");
  // Its own URL: the row's thumbnail is the same image, and a browser reuses an image it already holds
  // in the page, so the full view would otherwise be shown without a (audited) read.
  document.getElementById("snapshot-full").src = `${event.snapshot_url}?view=full`;
  const who = event.type === "alert" ? event.person_name || "anonymised" : "unknown face";
  document.getElementById("snapshot-title").textContent = `${who} — ${event.camera}`;
  document.getElementById("snapshot-caption").textContent = `${formatTime(event.ts)} · score ${event.score}`;
  dialog.showModal();
}

function reviewControls(event, row) {
  if (!can("events.review")) return null;
  const note = h("input", { type: "text", name: "note", maxlength: 1000, placeholder: "note (optional)", "aria-label": "note" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const act = async (path, kind) => {
    showError(error, null);
    try {
      await api(`events/${event.id}/${path}`, { method: "POST", json: { note: note.value } });
      const fresh = await api(`events/${event.id}`);
      row.replaceWith(eventRow(fresh));
    } catch (failure) {
      showError(error, failure);
    }
  };
  const buttons = [];
  if (!event.acknowledged) {
    buttons.push(h("button", { type: "button", class: "ack", onclick: () => act("ack") }, "Acknowledge"));
  }
  if (event.type === "alert" && !event.false_match && !event.anonymised) {
    buttons.push(h("button", { type: "button", class: "not-person quiet", onclick: () => act("false-match") }, "Not this person"));
  }
  if (event.type === "alert" && event.false_match) {
    const undo = async () => {
      try {
        await api(`events/${event.id}/false-match`, { method: "DELETE" });
        row.replaceWith(eventRow(await api(`events/${event.id}`)));
      } catch (failure) {
        showError(error, failure);
      }
    };
    buttons.push(h("button", { type: "button", class: "quiet", onclick: undo }, "Undo “not this person”"));
  }
  if (!buttons.length) return null;
  return h("div", { class: "actions" }, buttons.length && !event.acknowledged ? note : null, ...buttons, error);
}

function eventRow(event) {
  const isAlert = event.type === "alert";
  const person = isAlert ? event.person_name || "(person deleted)" : "Unknown face";
  const row = h("article", {
    class: `event ${event.type} ${event.stage || ""}${event.acknowledged ? " acknowledged" : ""}${event.false_match ? " false-match" : ""}`,
    dataset: { id: event.id, ts: event.ts, list: event.list || "" },
    "aria-label": `${person} on ${event.camera}`,
  });
  const faces = h(
    "div",
    { class: "faces" },
    faceFigure(event.snapshot_url, "captured", `captured face on ${event.camera}`, snapshotHiddenReason(event), event.snapshot_url ? () => openSnapshot(event) : null),
    isAlert
      ? faceFigure(event.person_photo_url, "enrolled", `enrolled photo of ${person}`, can("photos.read") ? "no enrolled photo" : "photo hidden for your role")
      : null,
  );
  const who = h(
    "div",
    { class: "who" },
    h("h2", { class: "person" }, person),
    h("p", { class: "camera" }, event.camera),
    h("p", { class: "when" }, h("time", { datetime: event.ts, title: event.ts }, formatTime(event.ts)), " · ", h("span", { class: "ago", dataset: { ts: event.ts } }, ago(event.ts))),
  );
  const facts = h("dl", { class: "facts" });
  if (isAlert) {
    facts.append(
      h("dt", {}, "list"), h("dd", { class: `list-${event.list}` }, LIST_LABELS[event.list] || event.list),
      h("dt", {}, "stage"), h("dd", { class: `stage-${event.stage}` }, event.stage),
      h("dt", {}, "score"), h("dd", {}, Number(event.score).toFixed(3)),
      h("dt", {}, "margin"), h("dd", {}, Number(event.margin).toFixed(3)),
    );
  } else {
    facts.append(h("dt", {}, "best score"), h("dd", {}, Number(event.score).toFixed(3)));
  }
  const marks = h("div", { class: "marks" });
  if (event.acknowledged) marks.append(h("p", { class: "mark-ack" }, markText("Acknowledged", event.acknowledged)));
  if (event.false_match) marks.append(h("p", { class: "mark-false" }, markText("Not this person — marked", event.false_match)));
  row.append(faces, who, facts, marks);
  const controls = reviewControls(event, row);
  if (controls) row.append(controls);
  return row;
}

async function load(append) {
  const more = document.getElementById("more");
  try {
    const page = await api(query(append ? state.next : null));
    if (!append) {
      clear(events);
      state.shown.clear();
    }
    for (const event of page.items) {
      if (state.shown.has(event.id)) continue;
      state.shown.add(event.id);
      events.append(eventRow(event));
    }
    state.next = page.next;
    more.hidden = !page.next;
    document.getElementById("events-empty").hidden = events.children.length > 0;
    notice("");
    if (!performance.getEntriesByName("vigil:events-shown").length) performance.mark("vigil:events-shown");
  } catch (failure) {
    notice(`Events unavailable: ${failure.message}`, "error");
  }
}

// A live event: shown at the top if it matches the tab and filters; the moment it was put on screen is kept in
// data-shown-at (ms since the epoch) so tests can measure how long after the pipeline's timestamp it appeared.
function onLiveEvent(event) {
  if (!matchesFilters(event) || state.shown.has(event.id)) return;
  state.shown.add(event.id);
  const row = eventRow(event);
  row.classList.add("new");
  row.dataset.shownAt = String(Date.now());
  events.prepend(row);
  document.getElementById("events-empty").hidden = true;
  if (document.hidden) document.title = `(new) Alerts · vigil`;
}

function selectTab(type) {
  state.type = type;
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.dataset.type === type;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  document.getElementById("filter-person").disabled = type === "unknown";
  events.setAttribute("aria-labelledby", `tab-${type}`);
  load(false);
}

function readFilters() {
  const form = document.getElementById("filters");
  state.filters = {
    camera: field(form, "camera").value,
    person: state.type === "alert" ? field(form, "person").value : "",
    since: localToIso(field(form, "since").value),
    until: localToIso(field(form, "until").value),
  };
}

async function fillFilterChoices() {
  const [cameras, people] = await Promise.allSettled([api("cameras"), api("people")]);
  const cameraSelect = document.getElementById("filter-camera");
  if (cameras.status === "fulfilled") {
    for (const camera of cameras.value.items) cameraSelect.append(h("option", { value: camera.name }, camera.name));
  }
  const personSelect = document.getElementById("filter-person");
  if (people.status === "fulfilled") {
    for (const person of people.value.items) personSelect.append(h("option", { value: person.id }, person.name));
  }
}

function main() {
  if (!document.getElementById("alerts-page")) return;
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab.dataset.type));
    tab.addEventListener("keydown", (key) => {
      if (key.key !== "ArrowRight" && key.key !== "ArrowLeft") return;
      const other = document.querySelector(`[role="tab"]:not([data-type="${tab.dataset.type}"])`);
      other.focus();
      selectTab(other.dataset.type);
    });
  }
  const form = document.getElementById("filters");
  form.addEventListener("submit", (submit) => {
    submit.preventDefault();
    readFilters();
    load(false);
  });
  document.getElementById("filter-clear").addEventListener("click", () => {
    form.reset();
    readFilters();
    load(false);
  });
  document.getElementById("more").addEventListener("click", () => load(true));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) document.title = "Alerts · vigil";
  });
  setInterval(() => {
    for (const span of events.querySelectorAll(".ago")) span.textContent = ago(span.dataset.ts);
  }, AGO_REFRESH_MS);
  fillFilterChoices();
  readFilters();
  load(false);
  // on a reconnection the page reloads its first page: nothing missed while the stream was down goes unseen
  openStream({ alert: onLiveEvent, unknown: onLiveEvent }, document.getElementById("stream-state"), () => load(false));
}

main();
