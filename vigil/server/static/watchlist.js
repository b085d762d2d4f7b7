// Watchlist: people with their photos and each photo's enrolment result; add a person, upload photos (each photo's
// result shown at once), edit, remove a photo, delete a person after a confirmation.
import { api, field, can, clear, h, notice, showError } from "./common.js";

const RESULT_LABELS = {
  ok: "ok",
  no_face: "no face",
  several_faces: "several faces",
  too_small: "too small",
  unreadable: "unreadable",
  pending: "pending",
};
const people = document.getElementById("people");

function resultLabel(result) {
  return RESULT_LABELS[result] || result;
}

// Upload one file; the answer says at once whether it was enrolled (ok) or why not.
async function uploadPhoto(personId, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const answer = await api(`people/${encodeURIComponent(personId)}/photos`, { method: "POST", form });
    return { name: file.name, ok: true, result: answer.result, text: resultLabel(answer.result) };
  } catch (failure) {
    const result = failure.body.result;
    const text = result ? `${resultLabel(result)} — ${failure.body.reason || failure.message}` : failure.message;
    return { name: file.name, ok: false, result: result || "refused", text };
  }
}

async function uploadAll(personId, files, list) {
  const results = [];
  for (const file of files) {
    const item = h("li", { class: "upload pending" }, `${file.name}: checking…`);
    list.append(item);
    const outcome = await uploadPhoto(personId, file);
    item.className = `upload ${outcome.ok ? "ok" : "refused"}`;
    item.dataset.result = outcome.result;
    item.textContent = `${outcome.name}: ${outcome.text}`;
    results.push(outcome);
  }
  return results;
}

function confirmDelete(text) {
  const dialog = document.getElementById("delete-dialog");
  document.getElementById("delete-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  document.getElementById("delete-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
  });
}

function photoTile(person, photo) {
  const result = photo.result || "pending";
  const remove = async () => {
    if (!(await confirmDelete(`Remove this photo of ${person.name}?`))) return;
    try {
      await api(`people/${encodeURIComponent(person.id)}/photos/${photo.id}`, { method: "DELETE" });
      await refresh();
    } catch (failure) {
      notice(failure.message, "error");
    }
  };
  return h(
    "figure",
    { class: `photo result-${result}`, dataset: { photo: photo.id } },
    h("img", { src: photo.url, alt: `photo of ${person.name}`, loading: "lazy", width: 120, height: 120 }),
    h("figcaption", {}, h("span", { class: "result" }, resultLabel(result))),
    can("watchlist.edit") ? h("button", { type: "button", class: "quiet small remove-photo", onclick: remove }, "Remove") : null,
  );
}

function editForm(person, card) {
  const form = h(
    "form",
    { class: "grid-form edit-form", hidden: true },
    h("label", {}, "Name ", h("input", { name: "name", value: person.name, required: true, maxlength: 200 })),
    h(
      "label",
      {},
      "List ",
      h("select", { name: "list" }, ...["deny", "vip", "allow"].map((kind) => h("option", { value: kind, selected: kind === person.list }, kind))),
    ),
    h("label", {}, "Threshold ", h("input", { name: "threshold", type: "number", min: 0, max: 1, step: 0.01, value: person.threshold ?? "", placeholder: "default" })),
    h("label", { class: "wide" }, "Notes ", h("input", { name: "notes", value: person.notes ?? "", maxlength: 2000 })),
    h("p", { class: "form-error error", role: "alert", hidden: true }),
    h("button", { type: "submit" }, "Save"),
  );
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const changes = {
      name: field(form, "name").value.trim(),
      list: field(form, "list").value,
      threshold: field(form, "threshold").value === "" ? null : Number(field(form, "threshold").value),
      notes: field(form, "notes").value || null,
    };
    try {
      await api(`people/${encodeURIComponent(person.id)}`, { method: "PATCH", json: changes });
      await refresh();
    } catch (failure) {
      showError(form.querySelector(".form-error"), failure);
    }
  });
  return form;
}

function personActions(person, card) {
  const actions = h("div", { class: "actions" });
  if (can("watchlist.enroll")) {
    const input = h("input", { type: "file", accept: "image/jpeg,image/png,image/webp", multiple: true, "aria-label": `add photos of ${person.name}`, class: "add-photos" });
    const results = h("ul", { class: "upload-results", "aria-live": "polite" });
    input.addEventListener("change", async () => {
      const files = [...input.files];
      input.value = "";
      clear(results);
      const outcomes = await uploadAll(person.id, files, results);
      if (outcomes.some((outcome) => outcome.ok)) await refresh(results);
    });
    actions.append(h("label", { class: "button-like" }, "Add photos ", input), results);
  }
  if (can("watchlist.edit")) {
    const form = editForm(person, card);
    const edit = h("button", { type: "button", class: "quiet edit", onclick: () => { form.hidden = !form.hidden; } }, "Edit");
    const remove = async () => {
      const message = `Delete ${person.name} (${person.id})? Their photos, embeddings and the snapshots of their past alerts are deleted; the alerts stay, anonymised.`;
      if (!(await confirmDelete(message))) return;
      try {
        await api(`people/${encodeURIComponent(person.id)}`, { method: "DELETE" });
        notice(`${person.name} deleted.`);
        await refresh();
      } catch (failure) {
        notice(failure.message, "error");
      }
    };
    actions.append(edit, h("button", { type: "button", class: "danger delete-person", onclick: remove }, "Delete"), form);
  }
  return actions;
}

function personCard(person) {
  const card = h("article", { class: `person-card list-${person.list}`, dataset: { person: person.id } });
  const facts = h(
    "dl",
    { class: "facts person-facts" },
    h("dt", {}, "id"), h("dd", {}, person.id),
    h("dt", {}, "list"), h("dd", {}, person.list),
    h("dt", {}, "threshold"), h("dd", {}, person.threshold ?? "default"),
    h("dt", {}, "enrolled"), h("dd", { class: "enrolled" }, person.enrolled ? "yes" : "not yet"),
    h("dt", {}, "photos"), h("dd", {}, person.photo_count),
  );
  const photos = person.photos
    ? h("div", { class: "photos" }, ...person.photos.map((photo) => photoTile(person, photo)))
    : h("p", { class: "hint" }, "Photos are shown to operators and administrators.");
  card.append(h("h2", { class: "person" }, person.name), facts);
  if (person.notes) card.append(h("p", { class: "notes" }, person.notes));
  card.append(photos, personActions(person, card));
  return card;
}

// Reload the list; an upload result list being shown is kept in place (moved into the fresh card).
async function refresh(keep) {
  try {
    const answer = await api("people");
    const reloadError = document.getElementById("reload-error");
    reloadError.textContent = answer.reload_error ? `The watchlist file does not load: ${answer.reload_error}` : "";
    reloadError.hidden = !answer.reload_error;
    const cards = answer.items.map(personCard);
    if (keep) {
      const id = keep.closest("[data-person]")?.dataset.person;
      const target = cards.find((card) => card.dataset.person === id)?.querySelector(".upload-results");
      if (target) target.replaceWith(keep);
    }
    clear(people).append(...cards);
    if (!cards.length) people.append(h("p", { class: "hint" }, "Nobody is on the watchlist yet."));
  } catch (failure) {
    notice(`Watchlist unavailable: ${failure.message}`, "error");
  }
}

function setUpAddForm() {
  const details = document.getElementById("add-person");
  if (!can("watchlist.enroll")) return;
  details.hidden = false;
  const form = document.getElementById("add-form");
  const error = form.querySelector(".form-error");
  const results = document.getElementById("add-results");
  field(form, "name").addEventListener("input", () => {
    if (field(form, "id").dataset.touched) return;
    field(form, "id").value = field(form, "name").value.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 64);
  });
  field(form, "id").addEventListener("input", () => { field(form, "id").dataset.touched = "1"; });
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    showError(error, null);
    clear(results);
    const person = { id: field(form, "id").value.trim(), name: field(form, "name").value.trim(), list: field(form, "list").value };
    if (field(form, "threshold").value !== "") person.threshold = Number(field(form, "threshold").value);
    if (field(form, "notes").value) person.notes = field(form, "notes").value;
    try {
      await api("people", { method: "POST", json: person });
    } catch (failure) {
      showError(error, failure);
      return;
    }
    const files = [...field(form, "photos").files];
    results.append(h("li", { class: "upload ok" }, `${person.name} added.`));
    await uploadAll(person.id, files, results);
    form.reset();
    delete field(form, "id").dataset.touched;
    await refresh();
  });
}

function main() {
  if (!document.getElementById("watchlist-page")) return;
  setUpAddForm();
  refresh();
}

main();
