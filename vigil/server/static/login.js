// The login form: POST /api/v1/auth/login (sets the session cookie), then back to the page asked for.
import { api, field, showError } from "./common.js";

function nextPage() {
  const wanted = new URLSearchParams(window.location.search).get("next") || "/";
  return /^\/[a-z]{0,20}$/.test(wanted) ? wanted : "/"; // only our own pages: never an open redirect
}

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const submit = document.getElementById("login-submit");
  submit.disabled = true;
  showError(error, null);
  try {
    await api("auth/login", {
      method: "POST",
      json: { username: field(form, "username").value.trim(), password: field(form, "password").value },
    });
    window.location.assign(nextPage());
  } catch (failure) {
    showError(error, failure);
    field(form, "password").value = "";
    field(form, "password").focus();
  } finally {
    submit.disabled = false;
  }
});
