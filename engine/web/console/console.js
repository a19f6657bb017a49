// The hl7engine console: log in, see the queues and the nodes, switch between the pages. The
// pages' own scripts (messages.js, patients.js) register with HL7.pages and use the helpers here.
// Every value from the server goes into the page as text (textContent), never as HTML:
// message content is untrusted input. Times are shown in the browser's time zone, named.
"use strict";

(function () {
  const NODES_EVERY_MS = 5000; // how often the nodes are read again while the console is open
  const $ = (id) => document.getElementById(id);
  let nodesTimer = null; // the interval that reads the nodes again

  // Every request says it comes from the console: the server then answers 401 without asking
  // the browser for Basic credentials, and accepts the POSTs of a session. A 401 means the session
  // is gone: the login form is shown, unless ``stayOn401`` (a page that shows the error in place).
  // A refusal is thrown as an Error with the server's reason and the HTTP ``status``.
  async function call(method, path, body, { stayOn401 = false } = {}) {
    const options = { method, headers: { "X-Requested-With": "hl7engine-console" }, credentials: "same-origin" };
    if (body !== undefined) {
      options.body = body;
    }
    const response = await fetch(path, options);
    if (response.status === 401 && !stayOn401) {
      showLogin("");
      throw new Error("not logged in");
    }
    const data = await response.json();
    if (!response.ok) {
      const error = new Error(data.error || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // A table cell holding ``text`` (never HTML), with the class ``name`` when given.
  function cell(row, text, name) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (name) {
      td.className = name;
    }
    row.appendChild(td);
    return td;
  }

  function clear(element) {
    while (element.firstChild) {
      element.removeChild(element.firstChild);
    }
  }

  // The API gives UTC ISO 8601; people read their own zone, named (e.g. "2026-01-01, 07:01:00 EST").
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  });

  function when(iso) {
    if (!iso) {
      return "";
    }
    const moment = new Date(iso);
    return isNaN(moment.getTime()) ? iso : TIME_FORMAT.format(moment);
  }

  // A time as the API gave it, in UTC, shortened for a table (e.g. "2026-01-01 12:01:00Z").
  function utc(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
  }

  // HL7 separates segments with CR; show one segment per line.
  function lines(text) {
    return text ? text.replace(/\r\n|\r|\n/g, "\n").replace(/\n+$/, "") : "";
  }

  // Ask before an action: the dialog shows what will happen; resolves true when confirmed.
  function confirmAction(text, action) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = action;
    return new Promise(function (resolve) {
      function done(answer) {
        $("confirm-ok").removeEventListener("click", ok);
        $("confirm-cancel").removeEventListener("click", cancel);
        dialog.removeEventListener("cancel", cancel);
        dialog.close();
        resolve(answer);
      }
      function ok() { done(true); }
      function cancel() { done(false); }
      $("confirm-ok").addEventListener("click", ok);
      $("confirm-cancel").addEventListener("click", cancel);
      dialog.addEventListener("cancel", cancel);
      dialog.showModal();
    });
  }

  // One page shown at a time; each page script registers { name, start } and is started when first shown.
  const pages = {};
  function showPage(name) {
    for (const section of document.querySelectorAll("main > section[data-page]")) {
      // A section closed on its page (data-open="false": no message opened) stays hidden.
      section.hidden = section.dataset.page !== name || section.dataset.open === "false";
    }
    for (const button of document.querySelectorAll("#nav button[data-page]")) {
      button.setAttribute("aria-current", button.dataset.page === name ? "page" : "false");
    }
    const page = pages[name];
    if (page && !page.started) {
      page.started = true;
      page.start();
    }
  }

  // Rows of ``table`` with class "result" and data-id open ``open(id)`` on a click or Enter.
  function onRowOpen(table, open) {
    function opened(event) {
      const row = event.target.closest("tr.result");
      if (row && (event.type === "click" || event.key === "Enter")) {
        open(row.dataset.id);
      }
    }
    table.addEventListener("click", opened);
    table.addEventListener("keydown", opened);
  }

  // A form's non-empty fields as query parameters.
  function formParams(form) {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (String(value).trim()) {
        params.set(name, String(value).trim());
      }
    }
    return params;
  }

  window.HL7 = {
    onRowOpen, formParams,
    $, call, cell, clear, when, utc, lines, confirmAction, loadQueues: () => loadQueues(),
    register(name, start) { pages[name] = { start, started: false }; },
    reset: [], // functions that forget a page's data at log out
  };

  function showLogin(message) {
    stopNodes();
    delete document.body.dataset.role;
    $("app-view").hidden = true;
    $("who").hidden = true;
    $("logout").hidden = true;
    $("nav").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = message;
    $("login-user").focus();
  }

  // The role decides what the page shows (console.css hides .operator-only and .admin-only
  // elements from lesser roles; the server refuses them anyway); admin.js hears of the session.
  function showApp(session) {
    document.body.dataset.role = session.role;
    document.dispatchEvent(new CustomEvent("hl7engine:session", { detail: session }));
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("who").textContent = session.user + " (" + session.role + ")";
    $("who").hidden = false;
    $("logout").hidden = false;
    $("nav").hidden = false;
    $("zone").textContent = "Times in " + ZONE;
    loadQueues();
    startNodes();
    for (const page of Object.values(pages)) {
      page.started = false;
    }
    showPage("messages");
  }

  async function login(event) {
    event.preventDefault();
    const form = new URLSearchParams({ user: $("login-user").value, password: $("login-password").value });
    $("login-password").value = "";
    const response = await fetch("/login", {
      method: "POST",
      headers: { "X-Requested-With": "hl7engine-console" },
      body: form,
      credentials: "same-origin",
    });
    const data = await response.json();
    if (response.ok) {
      showApp(data);
    } else {
      showLogin(data.error || "login failed");
    }
  }

  async function logout() {
    await fetch("/logout", { method: "POST", headers: { "X-Requested-With": "hl7engine-console" }, credentials: "same-origin" });
    for (const forget of window.HL7.reset) {
      forget();
    }
    showLogin("");
  }

  async function loadQueues() {
    const body = $("queues-table").tBodies[0];
    try {
      const queues = await call("GET", "/api/queues");
      clear(body);
      for (const queue of queues) {
        const row = body.insertRow();
        cell(row, queue.channel);
        cell(row, queue.destination);
        cell(row, queue.depth);
      }
      $("queues-empty").hidden = queues.length > 0;
    } catch (error) {
      $("queues-empty").hidden = true;
    }
  }

  // Seconds since a heartbeat, as people read them.
  function age(seconds) {
    if (seconds < 120) {
      return Math.round(seconds) + " s ago";
    }
    if (seconds < 7200) {
      return Math.round(seconds / 60) + " min ago";
    }
    return Math.round(seconds / 3600) + " h ago";
  }

  async function loadNodes() {
    const body = $("nodes-table").tBodies[0];
    let view;
    try {
      view = await call("GET", "/api/nodes");
    } catch (error) {
      $("nodes-error").textContent = error.message;
      return;
    }
    $("nodes-error").textContent = "";
    clear(body);
    for (const node of view.nodes) {
      const row = body.insertRow();
      row.className = "node node-" + node.state;
      cell(row, node.name);
      cell(row, node.state);
      cell(row, age(node.heartbeat_age));
      cell(row, node.roles.join(", "));
      cell(row, node.host);
      cell(row, node.pid);
      cell(row, node.leases.map((lease) => lease.key + (lease.expired ? " (expired)" : "")).join(", "));
    }
    $("nodes-empty").hidden = view.nodes.length > 0;
    $("nodes-unheld").hidden = view.unheld.length === 0;
    $("nodes-unheld").textContent = "Held by no node: " + view.unheld.join(", ");
  }

  function startNodes() {
    stopNodes();
    loadNodes();
    nodesTimer = setInterval(loadNodes, NODES_EVERY_MS);
  }

  function stopNodes() {
    if (nodesTimer !== null) {
      clearInterval(nodesTimer);
      nodesTimer = null;
    }
  }

  document.addEventListener("DOMContentLoaded", async function () {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("queues-refresh").addEventListener("click", loadQueues);
    $("nodes-refresh").addEventListener("click", loadNodes);
    for (const button of document.querySelectorAll("#nav button[data-page]")) {
      button.addEventListener("click", () => showPage(button.dataset.page));
    }
    // The dashboard is on the messages page: show that page, then the link scrolls to it.
    $("nav-dashboard").addEventListener("click", () => showPage("messages"));
    try {
      const session = await call("GET", "/api/session");
      showApp(session);
    } catch (error) {
      // call() already showed the login form on 401
      if (!$("login-view").hidden) {
        return;
      }
      showLogin(error.message);
    }
  });
})();
