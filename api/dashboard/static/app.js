/* Connecfy dashboard: every change is a call to the JSON API with the session cookie
   and the CSRF token; the pages only render what the server read. No dependencies. */
"use strict";

const POLL_MS = 3000;

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

/* One JSON API call: {ok, status, body}. Unsafe methods echo the csrftoken cookie. */
async function api(method, path, body, headers) {
  const init = { method, credentials: "same-origin", headers: Object.assign({ Accept: "application/json" }, headers || {}) };
  if (!["GET", "HEAD"].includes(method)) init.headers["X-CSRFToken"] = cookie("csrftoken");
  if (body instanceof FormData) {
    init.body = body; /* multipart: the browser writes the Content-Type with its boundary */
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    return { ok: false, status: 0, body: { detail: "the server could not be reached; check the connection and try again" } };
  }
  if (response.status === 401 && !path.startsWith("/api/auth/")) {
    location.href = "/login/?next=" + encodeURIComponent(location.pathname + location.search);
  }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (err) { parsed = { detail: text }; }
  return { ok: response.ok, status: response.status, body: parsed };
}

function problem(result) {
  const body = result.body || {};
  let text = body.detail || "something went wrong (" + result.status + ")";
  if (result.status === 429 && body.code !== "quota_exceeded") text += " — try again shortly";
  return text;
}

function toast(text) {
  const box = document.querySelector(".toast");
  if (!box) return;
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

/* A datetime-local value (the browser's wall-clock time, no zone) as ISO-8601 with
   seconds and the browser's UTC offset at that moment, as the API takes it. */
function localMoment(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  const pad = (n, width) => String(Math.abs(n)).padStart(width || 2, "0");
  const offset = -d.getTimezoneOffset();
  return pad(d.getFullYear(), 4) + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
    "T" + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
    (offset < 0 ? "-" : "+") + pad(Math.floor(Math.abs(offset) / 60)) + ":" + pad(Math.abs(offset) % 60);
}

/* body.a.b = value for a field named "a.b". */
function put(body, name, value) {
  const path = name.split(".");
  let node = body;
  for (const key of path.slice(0, -1)) node = node[key] = node[key] || {};
  node[path[path.length - 1]] = value;
}

/* Fields to a JSON body: numbers as numbers (data-number selects too, scaled by the unit
   chosen in their data-scale-by select), local times with the browser's offset, a
   dotted name as a nested object, empty optional fields left out, and the checked
   values of data-list checkboxes as a list (an empty one when none is checked). */
function formBody(form) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox" && "list" in el.dataset) {
      body[el.name] = body[el.name] || [];
      if (el.checked) body[el.name].push(el.value);
      continue;
    }
    if ((el.type === "radio" || el.type === "checkbox") && !el.checked) continue;
    if (el.value === "" && !el.required) continue;
    if ("localTime" in el.dataset) put(body, el.name, localMoment(el.value));
    else if (el.dataset.scaleBy) put(body, el.name, Math.round(Number(el.value) * Number(document.getElementById(el.dataset.scaleBy).value)));
    else put(body, el.name, el.type === "number" || "number" in el.dataset ? Number(el.value) : el.value);
  }
  return body;
}

function showError(form, text) {
  const box = form.querySelector(".error");
  if (box) { box.textContent = text; box.hidden = !text; }
}

/* The words a person reads beside a control: its label without the hint. */
function labelOf(control) {
  const label = control.labels && control.labels[0];
  if (!label) return control.name;
  const copy = label.cloneNode(true);
  for (const hint of copy.querySelectorAll(".hint")) hint.remove();
  return copy.textContent.trim();
}

/* A refusal that names a field of this form: the field is marked and focused, and the
   sentence starts with its label (the API's own name for it stays in the detail). The
   send endpoints number the message they refuse ("message 0: ..."); a form sends one,
   so the number is left out, whether or not a field is named. */
function fieldProblem(form, result) {
  const body = result.body || {};
  const detail = typeof body.index === "number" ? problem(result).replace(/^message \d+: /, "") : problem(result);
  const control = body.field && form.elements.namedItem(body.field);
  if (!control || !control.labels) return detail;
  control.setAttribute("aria-invalid", "true");
  control.focus();
  const hint = control.dataset.errorHint ? " (" + control.dataset.errorHint + ")" : "";
  return labelOf(control) + ": " + detail + hint;
}

function segmentsText(n) {
  return n === 1 ? "1 segment" : n + " segments";
}

const afterSubmit = {
  reload: () => location.reload(),
  sent: (form, body) => {
    const box = form.parentElement.querySelector("[data-sent]");
    const outcome = body.status === "scheduled"
      ? ["Scheduled for ", el("time", { datetime: body.send_at }, new Date(body.send_at).toLocaleString()), "."]
      : ["Queued."];
    box.replaceChildren(
      el("p", {}, el("strong", { "data-sent-status": body.status }, ...outcome),
        (body.encrypted ? " Encrypted end to end: at most " : " ") + segmentsText(body.segments) + " to " + body.to + ". "),
      el("p", {}, "Expires ", el("time", { datetime: body.expires_at, "data-sent-expires": "" }, new Date(body.expires_at).toLocaleString()),
        " if no phone has taken it by then."),
      el("p", {}, "Message id ", el("code", { "data-sent-id": "" }, body.id), " · ", el("a", { href: "/messages/" + encodeURIComponent(body.id) + "/" }, "see its status")));
    box.hidden = false;
    form.elements.message.value = "";
    form.elements.message.dispatchEvent(new Event("input"));
    delete form.dataset.idempotencyKey;
    delete form.dataset.sealed;
  },
  "key-created": (form, body) => {
    const box = document.querySelector("[data-new-key]");
    box.querySelector("[data-key-value]").textContent = body.api_key;
    const payload = JSON.stringify({ api_key: body.api_key, to: "+15551234567", message: "Hello from Connecfy" });
    box.querySelector("[data-curl]").textContent =
      "curl -X POST " + box.dataset.server + "/api/external/send/ \\\n  -H 'Content-Type: application/json' \\\n  -d '" + payload + "'";
    box.hidden = false;
    form.reset();
    toast("Key \u201c" + body.name + "\u201d created");
    refreshSection("key-list");
  },
  "window-saved": (form, body) => {
    showSendWindow(form, body.send_window);
    toast("Send window saved");
  },
  "suppression-added": (form, body) => {
    form.reset();
    toast("Added " + body.phone + " to the list");
    refreshSection("suppression-list");
  },
  "webhook-created": (form, body) => {
    const box = document.querySelector("[data-new-secret]");
    box.querySelector("[data-secret-value]").textContent = body.secret;
    box.hidden = false;
    form.reset();
    toast("Endpoint added: " + body.url);
    refreshSection("webhook-list");
  },
};

/* A device's send window as the server now has it (null: none). */
function showSendWindow(form, w) {
  form.querySelector("[data-window-note]").textContent = w
    ? "new messages go out from " + w.start + " to " + w.end + " (" + w.timezone + ") only"
    : "any time (no window)";
  form.querySelector('[data-action="remove-window"]').hidden = !w;
  if (!w) {
    form.elements.namedItem("send_window.start").value = "";
    form.elements.namedItem("send_window.end").value = "";
  }
}

/* Re-render one section of this page from the server (the key itself stays on screen). */
async function refreshSection(id) {
  const response = await fetch(location.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById(id);
  if (fresh) {
    document.getElementById(id).replaceWith(fresh);
    localTimes(fresh);
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

async function submitApiForm(event) {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  const [method, path] = form.dataset.api.split(" ");
  const button = form.querySelector("[type=submit]");
  showError(form, "");
  for (const marked of form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
  if (button) button.disabled = true;
  const headers = {};
  if (form.hasAttribute("data-idempotent")) {
    /* A retried click of the same form sends the same key: the message is queued once. */
    form.dataset.idempotencyKey = form.dataset.idempotencyKey || crypto.getRandomValues(new Uint32Array(4)).join("-");
    headers["Idempotency-Key"] = form.dataset.idempotencyKey;
  }
  let body = formBody(form);
  if (form.querySelector("[data-encrypt]")) {
    const sealed = await encryptedBody(form, body);
    if (!sealed) {
      if (button) button.disabled = false;
      return;
    }
    body = sealed;
  }
  const result = await api(method, path, body, headers);
  if (button) button.disabled = false;
  if (!result.ok) {
    /* Refused (4xx): nothing was queued, the corrected form is a new request. Unknown
       outcome (no answer, 5xx): the retry keeps the key so it cannot queue twice. */
    if (result.status !== 0 && result.status < 500) delete form.dataset.idempotencyKey;
    if (result.status !== 0 && result.status < 500) delete form.dataset.sealed;
    /* The outcome of an earlier send no longer stands beside this refusal. */
    const earlier = form.parentElement.querySelector("[data-sent]");
    if (earlier) earlier.hidden = true;
    showError(form, fieldProblem(form, result));
    return;
  }
  const then = form.dataset.then || "reload";
  if (then.startsWith("go:")) location.href = then.slice(3);
  else if (then.startsWith("toast:")) toast(then.slice(6));
  else afterSubmit[then](form, result.body);
}

const actions = {
  logout: async () => {
    await api("POST", "/api/auth/logout/");
    location.href = "/login/";
  },
  "remove-device": async (button) => {
    if (!confirm("Remove " + button.dataset.name + "? Its token stops working at once.")) return;
    const result = await api("DELETE", "/api/devices/" + button.dataset.deviceId + "/");
    if (result.ok) location.reload(); else toast(problem(result));
  },
  "remove-window": async (button) => {
    const form = button.closest("form");
    const result = await api("PATCH", form.dataset.api.split(" ")[1], { send_window: null });
    if (!result.ok) return toast(problem(result));
    showSendWindow(form, result.body.send_window);
    toast("Send window removed: new messages go out at any time");
  },
  "cancel-message": async (button) => {
    const row = button.closest("li.message");
    button.disabled = true;
    const result = await api("POST", "/api/sms/" + row.dataset.messageId + "/cancel/");
    button.disabled = false;
    if (result.ok) toast("Cancelled"); else toast(problem(result));
    /* Either way the row shows what the message is now (a phone may have taken it). */
    await refreshMessageRow(row);
  },
  "revoke-key": async (button) => {
    if (!confirm("Revoke " + button.dataset.name + "? Senders using it get 401 from now on.")) return;
    const result = await api("DELETE", "/api/api-keys/" + button.dataset.keyId + "/");
    if (result.ok) location.reload(); else toast(problem(result));
  },
  "remove-suppression": async (button) => {
    if (!confirm("Take " + button.dataset.phone + " off the list? Sends to it are taken again.")) return;
    const result = await api("DELETE", "/api/suppressions/" + encodeURIComponent(button.dataset.phone) + "/");
    if (result.ok) location.reload(); else toast(problem(result));
  },
  decide: async (button) => {
    const id = button.dataset.requestId;
    const note = document.getElementById("note-" + id).value;
    const result = await api("POST", "/api/operator/limit-requests/" + id + "/" + button.dataset.decision + "/", { note });
    if (result.ok) location.reload(); else toast(problem(result));
  },
  copy: async (button) => {
    const text = document.querySelector(button.dataset.copyFrom).textContent;
    try {
      await navigator.clipboard.writeText(text);
      toast("Copied");
    } catch (err) {
      const range = document.createRange();
      range.selectNodeContents(document.querySelector(button.dataset.copyFrom));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      toast("Selected: press Ctrl+C to copy");
    }
  },
  "new-code": () => newPairingCode(),
  "start-campaign": (button) => startCampaign(button),
  "cancel-campaign": (button) => cancelCampaign(button),
  "insert-column": (button) => insertColumn(button.dataset.column),
  "test-webhook": (button) => testWebhook(button),
  "rotate-secret": async (button) => {
    const card = button.closest("[data-webhook-id]");
    if (!confirm("Rotate the secret of " + card.dataset.url + "? The current one keeps signing too, for one day.")) return;
    button.disabled = true;
    const result = await api("POST", "/api/webhooks/" + card.dataset.webhookId + "/rotate-secret/");
    button.disabled = false;
    if (!result.ok) return toast(problem(result));
    const box = card.querySelector("[data-rotated]");
    box.querySelector("[data-secret-value]").textContent = result.body.secret;
    box.querySelector("[data-previous-until]").replaceChildren(timeNode(result.body.previous_secret_valid_until));
    box.hidden = false;
    toast("New secret made");
  },
  "enable-webhook": async (button) => {
    const result = await api("POST", "/api/webhooks/" + button.closest("[data-webhook-id]").dataset.webhookId + "/enable/");
    if (result.ok) location.reload(); else toast(problem(result));
  },
  "delete-webhook": async (button) => {
    const card = button.closest("[data-webhook-id]");
    if (!confirm("Delete the endpoint " + card.dataset.url + "? Events waiting for it are dropped.")) return;
    const result = await api("DELETE", "/api/webhooks/" + card.dataset.webhookId + "/");
    if (result.ok) location.reload(); else toast(problem(result));
  },
  redeliver: async (button) => {
    const card = button.closest("[data-webhook-id]");
    button.disabled = true;
    const result = await api("POST", "/api/webhooks/" + card.dataset.webhookId + "/deliveries/" + button.dataset.eventId + "/redeliver/");
    if (!result.ok) {
      button.disabled = false;
      return toast(problem(result));
    }
    button.replaceWith(el("span", { class: "muted", "data-redelivered": result.body.event_id }, "Queued again"));
    toast("Queued again with the same event id");
    setTimeout(() => loadDeliveries(card.querySelector("[data-delivery-log]")), 1000);
  },
};

/* Webhooks: the test event's answer, and each endpoint's delivery log from the
   deliveries API, read again every few seconds while it is open. */
async function testWebhook(button) {
  const card = button.closest("[data-webhook-id]");
  const box = card.querySelector("[data-test-result]");
  button.disabled = true;
  box.className = "test-result";
  box.textContent = "Sending a test event\u2026";
  box.hidden = false;
  const result = await api("POST", "/api/webhooks/" + card.dataset.webhookId + "/test/");
  button.disabled = false;
  if (!result.ok) {
    box.classList.add("bad");
    box.textContent = problem(result);
    return;
  }
  const d = result.body;
  const ok = d.status_code !== null && d.status_code >= 200 && d.status_code < 300;
  box.classList.add(ok ? "good" : "bad");
  box.replaceChildren(el("strong", {}, ok ? "Test event delivered: " : "Test event failed: "),
    (d.status_code === null ? "no answer" : "HTTP " + d.status_code) + " in " + d.latency_ms + " ms" +
    (d.error ? " \u2014 " + d.error : ""));
  box.dataset.statusCode = d.status_code === null ? "" : d.status_code;
  const log = card.querySelector("[data-delivery-log]");
  if (log.open) loadDeliveries(log);
}

function deliveryRow(d, redeliver) {
  const dash = () => el("span", { class: "muted" }, "\u2013");
  return el("tr", { "data-event-id": d.event_id, "data-event-type": d.event_type, "data-outcome": d.outcome },
    el("td", { "data-label": "Time" }, timeNode(d.at)),
    el("td", { "data-label": "Event" }, d.event_type),
    el("td", { "data-label": "Message or phone" }, d.message_id ? el("code", {}, d.message_id) :
      d.device_name ? el("span", { title: d.device_id }, d.device_name) : dash()),
    el("td", { "data-label": "Attempt" }, String(d.attempt), d.manual ? el("span", { class: "muted" }, " (redelivery)") : ""),
    el("td", { "data-label": "Outcome" }, el("span", { class: "status status-" + d.outcome }, d.outcome.replace("_", " "))),
    el("td", { "data-label": "Status" }, d.status_code === null ? dash() : String(d.status_code)),
    el("td", { "data-label": "Latency" }, d.latency_ms + " ms"),
    el("td", { "data-label": "Error" }, d.error || dash()),
    el("td", { "data-label": "Next retry" }, d.next_retry_at ? timeNode(d.next_retry_at) : dash()),
    el("td", {}, redeliver ? el("button", { type: "button", "data-action": "redeliver", "data-event-id": d.event_id,
      "aria-label": "Redeliver " + d.event_type + " of " + (d.message_id || d.device_name + ", event " + d.event_id) },
      "Redeliver") : ""));
}

async function loadDeliveries(log) {
  if (!log || log.dataset.loading) return;
  const card = log.closest("[data-webhook-id]");
  log.dataset.loading = "true";
  const result = await api("GET", "/api/webhooks/" + card.dataset.webhookId + "/deliveries/");
  delete log.dataset.loading;
  const note = log.querySelector("[data-log-note]");
  const table = log.querySelector("table");
  if (!result.ok) {
    note.textContent = problem(result);
    return;
  }
  /* One Redeliver per message or device event, on its newest line, while the endpoint takes events. */
  const seen = new Set();
  const rows = result.body.map((d) => {
    const offer = card.dataset.enabled === "true" && d.event_type !== "webhook.test" && !seen.has(d.event_id);
    seen.add(d.event_id);
    return deliveryRow(d, offer);
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
  note.textContent = rows.length === 0 ? "Nothing delivered yet." :
    rows.length === 1 ? "One attempt so far." : "The latest " + rows.length + " attempts, newest first.";
  log.dataset.loaded = "true";
}

function watchDeliveryLogs() {
  /* "toggle" does not bubble: caught on the way down, so lists re-rendered later count too. */
  document.addEventListener("toggle", (event) => {
    if (event.target.matches("[data-delivery-log]") && event.target.open) loadDeliveries(event.target);
  }, true);
  setInterval(() => {
    if (document.hidden) return;
    for (const log of document.querySelectorAll("[data-delivery-log][open]")) loadDeliveries(log);
  }, POLL_MS);
}

/* Times: local, and relative when recent or soon (a webhook's next retry). */
function ago(iso) {
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (seconds < -4) {
    const ahead = -seconds;
    if (ahead < 60) return "in " + ahead + " s";
    if (ahead < 3600) return "in " + Math.floor(ahead / 60) + " min";
    if (ahead < 86400) return "in " + Math.floor(ahead / 3600) + " h";
    return new Date(iso).toLocaleString();
  }
  if (seconds < 5) return "just now";
  if (seconds < 60) return seconds + " s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
  return new Date(iso).toLocaleString();
}

function localTimes(root) {
  for (const t of (root || document).querySelectorAll("time[datetime]")) {
    t.title = new Date(t.dateTime).toLocaleString();
    t.textContent = ago(t.dateTime);
  }
}

function timeNode(iso, empty) {
  if (!iso) return el("span", { class: "muted" }, empty || "never");
  const t = el("time", { datetime: iso }, "");
  localTimes({ querySelectorAll: () => [t] });
  return t;
}

/* Messages: a row shown again from GET /api/sms/<id>/ (after a cancel, and when a
   scheduled message's time has come), without reloading the page. */
function statusNode(value) {
  return el("span", { class: "status status-" + value }, value);
}

async function refreshMessageRow(row) {
  if (row.dataset.refreshing) return;
  row.dataset.refreshing = "true";
  const result = await api("GET", "/api/sms/" + row.dataset.messageId + "/");
  delete row.dataset.refreshing;
  if (!result.ok) return;
  const m = result.body;
  const names = JSON.parse(document.getElementById("device-names").textContent);
  row.dataset.status = m.status;
  row.querySelector("summary .status").replaceWith(statusNode(m.status));
  row.querySelector('[data-field="when"]').replaceChildren(
    ...(m.status === "scheduled" ? ["sends ", timeNode(m.send_at)] : [timeNode(m.created_at)]));
  row.querySelector(".timeline").replaceChildren(...m.timeline.map((t) => el("li", {}, statusNode(t.status), " ", timeNode(t.at),
    ...(t.device_id ? [" ", el("span", { class: "muted" }, "on " + (names[t.device_id] || t.device_id))] : []),
    t.error ? " \u2014 " + t.error : "")));
  if (!["scheduled", "queued"].includes(m.status)) {
    const cancel = row.querySelector('[data-action="cancel-message"]');
    if (cancel) cancel.remove();
  }
}

/* A scheduled row whose send time has passed is read again until it is due no more; on a
   message's own page it is read again until it reaches an end (or waits for a send time). */
const SETTLED = ["delivered", "failed", "expired", "cancelled", "received"];

function watchScheduledRows() {
  const single = document.querySelector("[data-message-page] > li");
  setInterval(() => {
    if (document.hidden) return;
    if (single && !SETTLED.includes(single.dataset.status) && single.dataset.status !== "scheduled") refreshMessageRow(single);
    for (const row of document.querySelectorAll('.messages > li[data-status="scheduled"][data-send-at]')) {
      if (Date.parse(row.dataset.sendAt) <= Date.now()) refreshMessageRow(row);
    }
  }, POLL_MS);
}

/* Presence without a reload: the devices list and the overview poll GET /api/devices/. */
function presenceBadge(online) {
  return el("span", { class: "badge " + (online ? "online" : "offline"), "data-field": "presence" }, online ? "Online" : "Offline");
}

/* The banner of the overview and the devices list: each phone that is offline (its
   presence lapsed, or it was never seen) while messages wait in its queue. */
function showOfflineDevices(devices) {
  const banner = document.querySelector("[data-offline-banner]");
  if (!banner) return;
  const stuck = devices.filter((d) => !d.online && d.counts.queued > 0);
  banner.replaceChildren(...stuck.map((d) => {
    const n = d.counts.queued;
    const query = new URLSearchParams({ device_id: d.device_id, status: "queued" });
    return el("p", { "data-offline-device": d.device_id, "data-waiting": n },
      el("strong", {}, d.device_name), " is offline (",
      ...(d.last_seen ? ["last seen ", timeNode(d.last_seen)] : ["not seen yet"]), "): ",
      n === 1 ? "1 message waits" : n + " messages wait", " for it. ",
      el("a", { href: "/messages/?" + query }, "See them"));
  }));
  banner.hidden = stuck.length === 0;
  banner.dataset.reads = (Number(banner.dataset.reads) || 0) + 1;
}

function updateDeviceCards(devices) {
  showOfflineDevices(devices);
  const list = document.querySelector("[data-live-devices]");
  const shown = [...list.querySelectorAll(":scope > li[data-device-id]")].map((n) => n.dataset.deviceId).sort().join();
  if (devices.map((d) => d.device_id).sort().join() !== shown) return location.reload();
  for (const d of devices) {
    const card = list.querySelector(':scope > li[data-device-id="' + d.device_id + '"]');
    card.querySelector('[data-field="presence"]').replaceWith(presenceBadge(d.online));
    card.querySelector('[data-field="last_seen"]').replaceChildren(timeNode(d.last_seen));
    card.querySelector('[data-field="battery"]').textContent = d.battery === null ? "–" : d.battery + " %";
    card.querySelector('[data-field="android_version"]').textContent = d.android_version || "–";
    card.querySelector('[data-field="app_version"]').textContent = d.app_version || "–";
    /* "Sent" counts sent or delivered, as the overview and GET /api/stats/ do. */
    const counts = Object.assign({ sent_or_delivered: (d.counts.sent || 0) + (d.counts.delivered || 0) }, d.counts);
    for (const dd of card.querySelectorAll("[data-count]")) dd.textContent = counts[dd.dataset.count] || 0;
  }
}

/* An API-only account's view of the platform pool (GET /api/stats/ "pool"): phones online,
   since when its oldest queued message waits, and a banner while messages wait with no
   pool phone online to take them. */
function showPoolStatus(stats) {
  const box = document.querySelector("[data-pool-status]");
  if (!box || !stats.pool) return;
  const { phones, phones_online: online, oldest_queued_at: oldest } = stats.pool;
  box.querySelector("[data-pool-online]").textContent =
    online + " of " + phones + (phones === 1 ? " pool phone" : " pool phones") + " online";
  box.querySelector("[data-pool-wait]").replaceChildren(...(oldest
    ? ["· your oldest waiting message was queued ", timeNode(oldest)]
    : ["· none of your messages is waiting"]));
  const banner = box.querySelector("[data-pool-banner]");
  const waiting = stats.queued;
  banner.replaceChildren(...(online === 0 && waiting > 0
    ? [el("strong", {}, "No pool phone is online."), " ",
      waiting === 1 ? "Your message waits" : "Your " + waiting + " messages wait",
      " until one is", ...(oldest ? [" (the oldest since ", timeNode(oldest), ")"] : []),
      "; each expires if no phone takes it in time."]
    : []));
  banner.hidden = !(online === 0 && waiting > 0);
  box.dataset.reads = (Number(box.dataset.reads) || 0) + 1;
}

function updateOverview(stats) {
  showPoolStatus(stats);
  const online = stats.devices.filter((d) => d.online).length;
  const values = Object.assign({}, stats, {
    success_rate: stats.sent + stats.failed ? stats.success_rate.toFixed(1) + " %" : "–",
    waiting: stats.queued + stats.claimed,
    devices_online: online + " of " + stats.devices.length,
  });
  for (const node of document.querySelectorAll("[data-stat]")) node.textContent = values[node.dataset.stat];
  showOfflineDevices(stats.devices);
  const list = document.querySelector("[data-live-device-list]");
  if (!list) return;
  list.replaceChildren(...stats.devices.map((d) => el("li", { "data-device-id": d.device_id },
    presenceBadge(d.online), " ", el("a", { href: "/devices/" }, d.device_name), " ",
    el("span", { class: "muted" }, "last seen "), timeNode(d.last_seen))));
  document.querySelector("[data-when-no-devices]").hidden = stats.devices.length > 0;
  document.body.dataset.statsLoaded = "true";
}

function poll(path, render) {
  let running = false;
  const tick = async () => {
    if (running || document.hidden) return;
    running = true;
    const result = await api("GET", path);
    running = false;
    if (result.ok) render(result.body);
  };
  tick();
  setInterval(tick, POLL_MS);
}

/* The navigation's count of new SMS, read again from GET /api/inbox/ every
   data-poll-ms while the page is shown (and at once when it is shown again). */
function showNewSms(link, count) {
  let badge = link.querySelector("[data-unread]");
  if (!count) {
    if (badge) badge.remove();
    return;
  }
  if (!badge) {
    badge = el("span", { class: "count" });
    link.append(" ", badge);
  }
  badge.dataset.unread = count;
  badge.replaceChildren(count < 100 ? String(count) : "99+", el("span", { class: "sr-only" }, " new"));
}

function watchNewSms(link) {
  let running = false;
  const tick = async () => {
    if (running || document.hidden) return;
    running = true;
    const result = await api("GET", "/api/inbox/");
    running = false;
    if (result.ok) showNewSms(link, result.body.new_sms);
  };
  setInterval(tick, Number(link.dataset.pollMs) || 20000);
  document.addEventListener("visibilitychange", tick);
}

/* Add Device: a fresh one-time code from the JSON API, its QR code, the countdown, and a
   note as soon as a phone has used it. A device that appears in the account's list after
   the code was made paired with it (a code works once): the countdown stops and says so. */
let countdown = null;
let pairingSeen = null; /* device ids listed when the current code was made */
let pairingLatest = null; /* device ids of the latest read of the list */

async function newPairingCode() {
  const box = document.querySelector("[data-pairing]");
  const pool = box.dataset.pool === "true";
  const result = await api("POST", "/api/devices/pairing-codes/", pool ? { pool: true } : undefined);
  const error = box.querySelector(".error");
  if (!result.ok) {
    error.textContent = problem(result);
    error.hidden = false;
    return;
  }
  error.hidden = true;
  pairingSeen = new Set(pairingLatest || box.dataset.known.split(",").filter(Boolean));
  box.dataset.codeState = "unused";
  box.classList.remove("used");
  const { code, expires_at: expiresAt } = result.body;
  box.querySelector("[data-pairing-code]").textContent = code;
  box.dataset.code = code;
  showPairingQr(box);
  const expiry = box.querySelector("[data-pairing-expiry]");
  clearInterval(countdown);
  const show = () => {
    const left = Math.max(0, Math.round((Date.parse(expiresAt) - Date.now()) / 1000));
    if (left === 0) {
      expiry.textContent = "This code has expired: make a new one.";
      box.classList.add("expired");
      clearInterval(countdown);
      return;
    }
    box.classList.remove("expired");
    expiry.textContent = "Expires in " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0") + " · works once";
  };
  show();
  countdown = setInterval(show, 1000);
}

/* Whether a phone could never reach this host: the computer's own loopback names. */
function isLoopback(hostname) {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return host === "localhost" || host.endsWith(".localhost") || /^127\./.test(host) || host === "::1" || host === "0.0.0.0";
}

/* The address typed for the phone, when it is one: http(s), a host, nothing after the path. */
function phoneServer() {
  const input = document.querySelector("[data-phone-server]");
  try {
    const url = new URL(input.value.trim());
    if (!["http:", "https:"].includes(url.protocol) || !url.hostname || url.search || url.hash) return null;
    return url;
  } catch (err) {
    return null;
  }
}

/* The QR code and the steps carry the address typed for the phone; a loopback one is warned of. */
function showPairingQr(box) {
  const url = phoneServer();
  const input = document.querySelector("[data-phone-server]");
  input.setAttribute("aria-invalid", url ? "false" : "true");
  box.querySelector("[data-loopback-warning]").hidden = !(url && isLoopback(url.hostname));
  if (!url || !box.dataset.code) return;
  const server = url.href.replace(/\/$/, "");
  box.querySelector("[data-server-shown]").textContent = server;
  const img = box.querySelector("[data-pairing-qr]");
  img.src = "/devices/pairing-qr.svg?" + new URLSearchParams({ code: box.dataset.code, server });
  img.hidden = false;
}

function watchPairing() {
  const box = document.querySelector("[data-pairing]");
  const known = new Set(box.dataset.known.split(",").filter(Boolean));
  const path = box.dataset.pool === "true" ? "/api/devices/?pool=true" : "/api/devices/";
  poll(path, (devices) => {
    pairingLatest = devices.map((d) => d.device_id);
    const usedBy = pairingSeen ? devices.filter((d) => !pairingSeen.has(d.device_id)) : [];
    if (usedBy.length && box.dataset.codeState === "unused") {
      clearInterval(countdown);
      box.dataset.codeState = "used";
      box.classList.add("used");
      box.querySelector("[data-pairing-expiry]").textContent = "Used: " + usedBy[0].device_name +
        " paired with this code, which works no more. Make a new code to pair another phone.";
    }
    const fresh = devices.filter((d) => !known.has(d.device_id));
    if (!fresh.length) return;
    const note = box.querySelector("[data-paired]");
    note.replaceChildren(...fresh.map((d) => el("span", { "data-paired-device": d.device_id },
      "\u2713 " + d.device_name + " is paired and " + (d.online ? "online" : "waiting for its first heartbeat") + ". ")),
      el("a", { href: box.dataset.pool === "true" ? "/settings/" : "/devices/" }, "See it"));
    note.hidden = false;
  });
}

/* End-to-end encryption on the Send page: the envelope of connecfy_client.e2e and the
   phone app, v1:base64(salt16 | nonce12 | AES-256-GCM ciphertext and tag16), the key
   PBKDF2-HMAC-SHA256 (100,000 iterations) of the passphrase's UTF-8 bytes. WebCrypto
   exists only in a secure context (HTTPS, localhost): elsewhere the option is not offered. */
const E2E_ITERATIONS = 100000;

function canEncrypt() {
  return window.isSecureContext === true && !!(window.crypto && crypto.subtle);
}

async function sealText(text, passphrase) {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const material = await crypto.subtle.importKey("raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  const key = await crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt, iterations: E2E_ITERATIONS },
    material, { name: "AES-GCM", length: 256 }, false, ["encrypt"]);
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce }, key, new TextEncoder().encode(text)));
  const raw = new Uint8Array(28 + sealed.length);
  raw.set(salt, 0);
  raw.set(nonce, 16);
  raw.set(sealed, 28);
  let binary = "";
  for (const byte of raw) binary += String.fromCharCode(byte);
  return "v1:" + btoa(binary);
}

/* The body with its message encrypted when the Encrypt box is ticked (null: refused
   here, the error shown). A retry of the same text and passphrase sends the same
   envelope, so its Idempotency-Key still names the same request. */
async function encryptedBody(form, body) {
  const toggle = form.querySelector("[data-encrypt-toggle]");
  if (!toggle || !toggle.checked) return body;
  const field = form.querySelector("[data-encrypt-passphrase]");
  if (!canEncrypt()) {
    showError(form, "This page cannot encrypt: it is not a secure context (HTTPS or localhost).");
    return null;
  }
  if (!field.value) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
    showError(form, "Passphrase: enter the passphrase your phones use to decrypt.");
    return null;
  }
  const earlier = form.dataset.sealed ? JSON.parse(form.dataset.sealed) : null;
  let envelope;
  if (earlier && earlier.text === body.message && earlier.passphrase === field.value) {
    envelope = earlier.envelope;
  } else {
    envelope = await sealText(body.message, field.value);
    form.dataset.sealed = JSON.stringify({ text: body.message, passphrase: field.value, envelope });
  }
  return Object.assign({}, body, { message: envelope, encrypted: true });
}

function watchEncryption(box) {
  const available = canEncrypt();
  box.querySelector("[data-encrypt-available]").hidden = !available;
  box.querySelector("[data-encrypt-unavailable]").hidden = available;
  const toggle = box.querySelector("[data-encrypt-toggle]");
  const field = box.querySelector("[data-encrypt-passphrase]");
  toggle.disabled = !available;
  toggle.addEventListener("change", () => { field.disabled = !toggle.checked; });
}

/* Segments as the phone will split the text: the GSM 03.38 tables come from the server
   (broker/segments.py); the packing mirrors count_segments there. */
function segmentsOf(text, tables) {
  const chars = Array.from(text);
  const inBasic = (c) => tables.basic.includes(c);
  const inExt = (c) => tables.extension.includes(c);
  let encoding, sizes, single, part;
  if (chars.every(inBasic)) {
    [encoding, sizes, single, part] = ["GSM-7", chars.map(() => 1), 160, 153];
  } else if (chars.every((c) => inBasic(c) || inExt(c))) {
    [encoding, sizes, single, part] = ["GSM-7", chars.map((c) => (inExt(c) ? 2 : 1)), 160, 153];
  } else {
    [encoding, sizes, single, part] = ["UCS-2", chars.map((c) => c.length), 70, 67];
  }
  const units = sizes.reduce((a, b) => a + b, 0);
  if (units === 0) return { encoding, count: 0, units };
  if (units <= single) return { encoding, count: 1, units };
  let count = 1, room = part;
  for (const size of sizes) {
    if (size > room) { count += 1; room = part; }
    room -= size;
  }
  return { encoding, count, units };
}

function watchSegments() {
  const tables = JSON.parse(document.getElementById("gsm-tables").textContent);
  const area = document.getElementById("message");
  const render = () => {
    const s = segmentsOf(area.value, tables);
    document.querySelector("[data-seg-chars]").textContent = Array.from(area.value).length;
    document.querySelector("[data-seg-encoding]").textContent = s.encoding;
    document.querySelector("[data-seg-count]").textContent = s.count;
    document.querySelector("[data-seg-unit]").textContent = s.count === 1 ? "segment" : "segments";
  };
  area.addEventListener("input", render);
  render();
}

/* Campaigns: the CSV file is read in this browser (its first rows for the columns and the
   preview, all of it for the download of the rejected rows), the template rendered as
   broker/campaign_files.py renders it, then the file is uploaded to POST /api/campaigns/. */
const CAMPAIGN_HEAD_BYTES = 65536;
const CAMPAIGN_PREVIEW_ROWS = 5;
const CAMPAIGN_POLL_MS = 1500;
const TEMPLATE_PART = /\{\{|\}\}|\{([^{}]*)\}|[{}]/g;

/* The delimiter the server picks: whichever of ";" and "," the first line has more of. */
function csvDelimiter(text) {
  const first = text.split("\n", 1)[0];
  return first.split(";").length > first.split(",").length ? ";" : ",";
}

/* CSV records as Python's csv reader makes them (quotes, "" inside quotes, CRLF, LF or CR);
   a blank line is a record of one empty cell. */
function csvRecords(text, delimiter) {
  const records = [];
  let record = [], cell = "", quoted = false, i = 0;
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i += 1; continue; }
      cell += c; i += 1; continue;
    }
    if (c === '"' && cell === "") { quoted = true; i += 1; continue; }
    if (c === delimiter) { record.push(cell); cell = ""; i += 1; continue; }
    if (c === "\r" || c === "\n") {
      record.push(cell); records.push(record); record = []; cell = "";
      i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
      continue;
    }
    cell += c; i += 1;
  }
  if (cell !== "" || record.length) { record.push(cell); records.push(record); }
  return records;
}

const blankRecord = (r) => !r.some((c) => c.trim());

/* The header and the rows after it, numbered as the report numbers them (from 1 on the
   line after the header, blank lines counted). */
function csvTable(text) {
  text = text.replace(/^\ufeff/, "");
  const records = csvRecords(text, csvDelimiter(text));
  let start = 0;
  while (start < records.length && blankRecord(records[start])) start += 1;
  if (start >= records.length) return null;
  return { header: records[start].map((c) => c.trim()), rows: records.slice(start + 1) };
}

/* The template for one row: {text, unknown}; unknown names a column the file lacks. */
function renderTemplate(template, header, cells) {
  let unknown = null, empty = null;
  const text = template.replace(TEMPLATE_PART, (token, name) => {
    if (token === "{{" || token === "}}") return token[0];
    if (name === undefined) return token;
    const index = header.indexOf(name.trim());
    if (index < 0) { unknown = unknown || name.trim(); return token; }
    const value = (cells[index] || "").trim();
    if (!value) empty = empty || name.trim();
    return value;
  });
  return { text, unknown, empty };
}

function chooseDefaultColumn(header) {
  return header.find((n) => n === "phone") || header.find((n) => n.toLowerCase() === "phone") ||
    header.find((n) => /phone|mobile|number|tel/i.test(n)) || header[0];
}

function campaignPreview(form) {
  const state = form.campaignFile;
  const box = form.querySelector("[data-preview]");
  if (!state || !state.head) { box.hidden = true; return; }
  const tables = JSON.parse(document.getElementById("gsm-tables").textContent);
  const template = form.elements.template.value;
  const phoneIndex = state.head.header.indexOf(form.elements.phone_column.value);
  const rows = [];
  let note = "";
  state.head.rows.forEach((cells, i) => {
    if (rows.length >= CAMPAIGN_PREVIEW_ROWS || blankRecord(cells)) return;
    const rendered = renderTemplate(template, state.head.header, cells);
    if (rendered.unknown) note = "The file has no column \u201c" + rendered.unknown + "\u201d: the upload would be refused.";
    const s = segmentsOf(rendered.text, tables);
    const empty = rendered.empty ? el("span", { class: "error-text" }, " (no " + rendered.empty + ": this row is rejected)") : "";
    rows.push(el("tr", { "data-preview-row": String(i + 1) },
      el("td", { "data-label": "Row" }, String(i + 1)),
      el("td", { "data-label": "To" }, phoneIndex >= 0 ? (cells[phoneIndex] || "").trim() : ""),
      el("td", { "data-label": "Message" }, rendered.text, empty),
      el("td", { "data-label": "Encoding", "data-preview-encoding": "" }, s.encoding),
      el("td", { "data-label": "Segments", "data-preview-segments": "" }, String(s.count))));
  });
  form.querySelector("[data-preview-rows]").replaceChildren(...rows);
  let noteBox = box.querySelector("[data-template-note]");
  if (!noteBox) {
    noteBox = el("p", { class: "hint", "data-template-note": "" });
    box.append(noteBox);
  }
  noteBox.textContent = note;
  noteBox.hidden = !note;
  box.hidden = false;
}

function insertColumn(name) {
  const area = document.getElementById("template");
  const token = "{" + name + "}";
  const start = area.selectionStart, end = area.selectionEnd;
  area.value = area.value.slice(0, start) + token + area.value.slice(end);
  area.selectionStart = area.selectionEnd = start + token.length;
  area.focus();
  area.dispatchEvent(new Event("input"));
}

async function chooseCampaignFile(form, file) {
  if (!file) return;
  showError(form, "");
  form.parentElement.querySelector("[data-upload-report]").hidden = true;
  form.campaignFile = { file, head: null };
  const chosen = form.querySelector("[data-file-chosen]");
  chosen.textContent = file.name + " \u00b7 " + (file.size < 1024 ? file.size + " bytes" : Math.ceil(file.size / 1024) + " KiB");
  chosen.hidden = false;
  const whole = file.size <= CAMPAIGN_HEAD_BYTES;
  let text = await file.slice(0, CAMPAIGN_HEAD_BYTES).text();
  if (!whole) text = text.slice(0, Math.max(0, text.lastIndexOf("\n"))); /* no half row */
  const head = csvTable(text);
  const select = form.elements.phone_column;
  const buttons = form.querySelector("[data-columns]");
  if (!head || !head.header.some(Boolean)) {
    select.replaceChildren(el("option", { value: "" }, "no header row found"));
    select.disabled = true;
    buttons.replaceChildren();
    showError(form, "CSV file: it has no header row naming its columns.");
    campaignPreview(form);
    return;
  }
  form.campaignFile.head = head;
  const names = head.header.filter(Boolean);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  select.value = chooseDefaultColumn(names);
  select.disabled = false;
  buttons.replaceChildren(...names.map((n) => el("button", { type: "button", "data-action": "insert-column", "data-column": n,
    "aria-label": "Insert the column " + n }, "{" + n + "}")));
  campaignPreview(form);
}

/* A cell a spreadsheet shows as text (as the server's CSV exports write it). */
function csvCell(value) {
  let v = String(value);
  if (/^[=@\t\r]/.test(v) || (/^[+-]/.test(v) && !/^[+-][\d\s().-]*$/.test(v))) v = "'" + v;
  return /[",\r\n;]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
}

/* The rejected rows as a CSV: row, field, problem and, when the file is at hand, the row's own cells. */
function rejectedCsv(report, table) {
  const lines = [["row", "field", "problem", ...(table ? table.header : [])]];
  for (const p of report.invalid) lines.push([p.row, p.field, p.detail, ...(table ? table.rows[p.row - 1] || [] : [])]);
  return lines.map((cells) => cells.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

function reportNodes(report, table) {
  const fact = (label, key, value) => el("div", {}, el("dt", {}, label), el("dd", { "data-report": key }, String(value)));
  const nodes = [el("dl", { class: "facts" },
    fact("Rows", "rows", report.rows),
    fact("Valid (to send)", "valid", report.valid),
    fact("Invalid", "invalid_rows", report.invalid_rows),
    fact("Duplicates", "duplicates", report.duplicates),
    fact("Opted out", "opted_out", report.opted_out),
    fact("Longest message", "max_segments", segmentsText(report.max_segments)),
    fact("All messages", "segments", segmentsText(report.segments)))];
  if (report.invalid.length) {
    nodes.push(el("div", { class: "table-scroll" }, el("table", { class: "invalid-rows" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Row"), el("th", { scope: "col" }, "Field"), el("th", { scope: "col" }, "Problem"))),
      el("tbody", {}, ...report.invalid.map((p) => el("tr", { "data-invalid-row": String(p.row) },
        el("td", { "data-label": "Row" }, String(p.row)), el("td", { "data-label": "Field" }, p.field),
        el("td", { "data-label": "Problem" }, p.detail)))))));
    if (report.invalid_rows > report.invalid.length) {
      nodes.push(el("p", { class: "hint" }, "The first " + report.invalid.length + " of " + report.invalid_rows + " invalid rows are listed."));
    }
    const href = URL.createObjectURL(new Blob([rejectedCsv(report, table)], { type: "text/csv" }));
    nodes.push(el("p", {}, el("a", { class: "button", href, download: "rejected-rows.csv", "data-rejected-download": "" }, "Download rejected rows")));
  } else {
    nodes.push(el("p", { class: "muted" }, "No row was rejected."));
  }
  return nodes;
}

async function uploadCampaign(event) {
  const form = event.target;
  event.preventDefault();
  showError(form, "");
  for (const marked of form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
  const state = form.campaignFile;
  if (!state) {
    form.elements.file.setAttribute("aria-invalid", "true");
    return showError(form, "CSV file: choose or drop a file first.");
  }
  const data = new FormData();
  data.append("file", state.file, state.file.name);
  for (const name of ["name", "template", "phone_column", "device_id", "priority"]) {
    const control = form.elements.namedItem(name);
    if (control && control.value !== "") data.append(name, control.value);
  }
  if (form.elements.send_at.value) data.append("send_at", localMoment(form.elements.send_at.value));
  const button = form.querySelector("[type=submit]");
  button.disabled = true;
  const result = await api("POST", "/api/campaigns/", data);
  button.disabled = false;
  const box = form.parentElement.querySelector("[data-upload-report]");
  if (!result.ok) {
    box.hidden = true;
    return showError(form, fieldProblem(form, result));
  }
  const campaign = result.body;
  const table = csvTable(await state.file.text());
  box.replaceChildren(
    el("h3", {}, "Checked: \u201c" + (campaign.name || campaign.id) + "\u201d is a draft"),
    ...reportNodes(campaign.report, table),
    el("p", {}, "Nothing is sent until you start it. ",
      el("a", { href: "/campaigns/" + campaign.id + "/", "data-campaign-link": "" }, "Open the campaign")),
    el("button", { type: "button", class: "primary", "data-action": "start-campaign", "data-campaign-id": campaign.id,
      ...(campaign.report.valid ? {} : { disabled: "" }) }, "Start"));
  box.hidden = false;
  refreshSection("campaign-list");
}

function watchCampaignForm(form) {
  const zone = form.querySelector("[data-drop-zone]");
  const input = form.querySelector("[data-campaign-file]");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    try { input.files = files; } catch (err) { /* the input shows no name; the file is still kept */ }
    chooseCampaignFile(form, files[0]);
  });
  input.addEventListener("change", () => chooseCampaignFile(form, input.files[0]));
  form.elements.template.addEventListener("input", () => campaignPreview(form));
  form.elements.phone_column.addEventListener("change", () => campaignPreview(form));
  form.addEventListener("submit", uploadCampaign);
}

const PAUSE_REASONS = {
  quota_exceeded: "the account's daily quota is used up",
  rate_limited: "the send limit is holding it",
};

function campaignStateNote(c) {
  switch (c.state) {
    case "draft":
      return c.send_at ? ["A draft: once started, its messages are sent from ", timeNode(c.send_at), "."]
        : ["A draft: nothing is sent until you start it."];
    case "sending": return ["Sending: the rows are queued a chunk at a time."];
    case "paused":
      return ["Paused: " + (PAUSE_REASONS[c.reason] || c.reason || "held") + ". It resumes by itself",
        ...(c.resume_at ? [" (next try: ", timeNode(c.resume_at), ")"] : []), "."];
    case "done": return ["Done: every valid row is queued."];
    default: return [c.reason === "device_removed" ? "Cancelled: its device was removed." : "Cancelled: nothing more is queued."];
  }
}

/* Whether the page should read the campaign again: it is queueing, or messages it queued
   are still waiting for a phone. */
function campaignLive(c) {
  const settled = c.counts.sent + c.counts.failed + c.counts.cancelled;
  return c.state === "sending" || c.state === "paused" || (c.state === "done" && settled < c.counts.queued);
}

function showCampaign(c) {
  const badge = document.querySelector("[data-campaign-state]");
  badge.textContent = c.state;
  badge.className = "status status-" + c.state;
  document.querySelector("[data-state-note]").replaceChildren(...campaignStateNote(c));
  const bar = document.querySelector("[data-progress]");
  bar.max = c.report.valid || 1;
  bar.value = Math.min(c.counts.queued, c.report.valid);
  document.querySelector("[data-progress-text]").textContent =
    c.counts.queued + " of " + c.report.valid + " queued \u00b7 " + c.counts.sent + " sent";
  for (const dd of document.querySelectorAll("[data-count]")) dd.textContent = c.counts[dd.dataset.count];
  document.querySelector('[data-field="started_at"]').replaceChildren(timeNode(c.started_at, "not yet"));
  document.querySelector('[data-field="finished_at"]').replaceChildren(timeNode(c.finished_at, "not yet"));
  document.querySelector('[data-action="start-campaign"]').hidden = c.state !== "draft";
  document.querySelector('[data-action="cancel-campaign"]').hidden = !["draft", "sending", "paused"].includes(c.state);
  document.querySelector("[data-campaign]").dataset.state = c.state;
}

let campaignTimer = null;

function followCampaign(id) {
  clearTimeout(campaignTimer);
  const tick = async () => {
    const result = await api("GET", "/api/campaigns/" + id + "/");
    if (result.ok) showCampaign(result.body);
    if (!result.ok || campaignLive(result.body)) campaignTimer = setTimeout(tick, CAMPAIGN_POLL_MS);
  };
  campaignTimer = setTimeout(tick, CAMPAIGN_POLL_MS);
}

function watchCampaign() {
  const c = JSON.parse(document.getElementById("campaign-data").textContent);
  document.querySelector("[data-campaign-report]").replaceChildren(...reportNodes(c.report, null));
  showCampaign(c);
  if (campaignLive(c)) followCampaign(c.id);
}

async function startCampaign(button) {
  const page = document.querySelector("[data-campaign]");
  const id = button.dataset.campaignId || page.dataset.campaign;
  button.disabled = true;
  const result = await api("POST", "/api/campaigns/" + id + "/start/");
  button.disabled = false;
  if (!result.ok) return toast(problem(result));
  if (!page) {
    location.href = "/campaigns/" + id + "/";
    return;
  }
  showCampaign(result.body);
  toast("Started");
  followCampaign(id);
}

async function cancelCampaign(button) {
  if (!confirm("Cancel this campaign? No further row is queued, and its messages no phone holds yet are cancelled.")) return;
  const id = document.querySelector("[data-campaign]").dataset.campaign;
  button.disabled = true;
  const result = await api("POST", "/api/campaigns/" + id + "/cancel/");
  button.disabled = false;
  if (!result.ok) return toast(problem(result));
  showCampaign(result.body);
  toast("Cancelled");
  followCampaign(id);
}

document.addEventListener("submit", submitApiForm);
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-action]");
  if (button && actions[button.dataset.action]) {
    event.preventDefault();
    actions[button.dataset.action](button);
  }
});
document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  setInterval(localTimes, 15000);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const input of document.querySelectorAll("[data-browser-zone]")) input.value = input.value || zone;
  if (document.querySelector("[data-live-devices]")) poll("/api/devices/", updateDeviceCards);
  if (document.querySelector("[data-live-stats]")) poll("/api/stats/", updateOverview);
  else if (document.querySelector("[data-pool-status]")) poll("/api/stats/", showPoolStatus);
  if (document.querySelector("[data-pairing]")) {
    const box = document.querySelector("[data-pairing]");
    document.querySelector("[data-phone-server]").addEventListener("input", () => showPairingQr(box));
    showPairingQr(box);
    newPairingCode();
    watchPairing();
  }
  if (document.getElementById("gsm-tables") && document.getElementById("message")) watchSegments();
  const campaignForm = document.querySelector("[data-campaign-form]");
  if (campaignForm) watchCampaignForm(campaignForm);
  if (document.getElementById("campaign-data")) watchCampaign();
  const encryption = document.querySelector("[data-encrypt]");
  if (encryption) watchEncryption(encryption);
  if (document.getElementById("webhook-list")) watchDeliveryLogs();
  if (document.getElementById("device-names")) watchScheduledRows();
  const newSms = document.querySelector("[data-new-sms]");
  if (newSms) watchNewSms(newSms);
  document.body.dataset.ready = "true";
});
