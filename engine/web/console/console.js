// The hl7engine console: log in, search stored messages, look at one, see the queues and the nodes.
// Every value from the server goes into the page as text (textContent), never as HTML:
// message content is untrusted input.
"use strict";

(function () {
  const PAGE = 50;
  const NODES_EVERY_MS = 5000; // how often the nodes are read again while the console is open
  const $ = (id) => document.getElementById(id);
  let lastSearch = null; // URLSearchParams of the current search
  let oldestId = null; // for "Older messages"
  let shownId = null; // the message in the detail view
  let nodesTimer = null; // the interval that reads the nodes again

  // Every request says it comes from the console: the server then answers 401 without asking
  // the browser for Basic credentials, and accepts the POSTs of a session.
  async function call(method, path, body) {
    const options = { method, headers: { "X-Requested-With": "hl7engine-console" }, credentials: "same-origin" };
    if (body !== undefined) {
      options.body = body;
    }
    const response = await fetch(path, options);
    if (response.status === 401) {
      showLogin("");
      throw new Error("not logged in");
    }
    const data = await response.json();
    if (!response.ok) {
      throw new Error(data.error || response.statusText);
    }
    return data;
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function clear(element) {
    while (element.firstChild) {
      element.removeChild(element.firstChild);
    }
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
  }

  // HL7 separates segments with CR; show one segment per line.
  function lines(text) {
    return text ? text.replace(/\r\n|\r|\n/g, "\n").replace(/\n+$/, "") : "";
  }

  function showLogin(message) {
    stopNodes();
    delete document.body.dataset.role;
    $("app-view").hidden = true;
    $("who").hidden = true;
    $("logout").hidden = true;
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
    loadQueues();
    startNodes();
    search(new URLSearchParams());
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
    closeDetail();
    clear($("results").tBodies[0]);
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

  function searchParams() {
    const params = new URLSearchParams();
    for (const [name, value] of new FormData($("search-form"))) {
      if (String(value).trim()) {
        params.set(name, String(value).trim());
      }
    }
    return params;
  }

  async function search(params, older) {
    const query = new URLSearchParams(params);
    query.set("limit", String(PAGE));
    if (older && oldestId !== null) {
      query.set("before_id", String(oldestId));
    }
    $("search-error").textContent = "";
    let found;
    try {
      found = await call("GET", "/api/messages?" + query.toString());
    } catch (error) {
      $("search-error").textContent = error.message;
      return;
    }
    const body = $("results").tBodies[0];
    if (!older) {
      clear(body);
    }
    lastSearch = params;
    for (const message of found) {
      const row = body.insertRow();
      row.dataset.id = String(message.id);
      row.className = "result status-" + message.status.toLowerCase();
      row.tabIndex = 0;
      cell(row, message.id);
      cell(row, when(message.received_at));
      cell(row, message.status);
      cell(row, message.ack_code);
      cell(row, message.type);
      cell(row, message.control_id);
      cell(row, message.patient_id);
      cell(row, [message.sending_application, message.sending_facility].filter(Boolean).join("/"));
      cell(row, message.channel);
      oldestId = message.id;
    }
    $("more").hidden = found.length < PAGE;
  }

  function field(list, name, value) {
    const term = document.createElement("dt");
    term.textContent = name;
    const definition = document.createElement("dd");
    definition.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
    list.appendChild(term);
    list.appendChild(definition);
  }

  async function openMessage(id) {
    let message;
    try {
      message = await call("GET", "/api/messages/" + encodeURIComponent(id));
    } catch (error) {
      $("search-error").textContent = error.message;
      return;
    }
    shownId = message.id;
    $("detail-id").textContent = String(message.id);
    $("action-result").textContent = "";
    $("try-panel").hidden = true;
    const fields = $("detail-fields");
    clear(fields);
    field(fields, "Received", when(message.received_at));
    field(fields, "Status", message.status);
    field(fields, "Type", message.type);
    field(fields, "Control id", message.control_id);
    field(fields, "Patient id", message.patient_id);
    field(fields, "Sender", [message.sending_application, message.sending_facility].filter(Boolean).join("/"));
    field(fields, "Receiver", [message.receiving_application, message.receiving_facility].filter(Boolean).join("/"));
    field(fields, "Listener", message.listener);
    field(fields, "Peer", message.peer);
    field(fields, "Channel", message.channel);
    field(fields, "Version", message.version);
    field(fields, "ACK code", message.ack_code);
    field(fields, "Error", message.error);
    if (message.pruned_at) {
      field(fields, "Content pruned", when(message.pruned_at));
    }
    $("detail-raw").textContent = message.pruned_at
      ? "(content removed by retention " + when(message.pruned_at) + ")"
      : lines(message.raw);
    $("detail-ack").textContent = lines(message.ack) || "(none)";

    const deliveries = $("deliveries").tBodies[0];
    clear(deliveries);
    for (const delivery of message.deliveries) {
      const row = deliveries.insertRow();
      cell(row, delivery.destination);
      cell(row, delivery.status);
      cell(row, delivery.attempts);
      cell(row, when(delivery.sent_at));
      cell(row, delivery.response_code);
      cell(row, delivery.reason);
      cell(row, when(delivery.superseded_at));
    }
    const events = $("events").tBodies[0];
    clear(events);
    for (const event of message.events) {
      const row = events.insertRow();
      cell(row, when(event.at));
      cell(row, event.status);
      cell(row, event.destination);
      cell(row, event.detail);
    }
    $("detail").hidden = false;
    $("detail").scrollIntoView();
  }

  function closeDetail() {
    shownId = null;
    $("detail").hidden = true;
    $("detail-raw").textContent = "";
    $("detail-ack").textContent = "";
  }

  async function act(action) {
    if (shownId === null) {
      return;
    }
    const id = shownId;
    try {
      const result = await call("POST", "/api/messages/" + encodeURIComponent(id) + "/" + action);
      $("action-result").textContent =
        action === "resend" ? "queued " + result.deliveries.length + " delivery(ies)" : result.reprocessed ? "will be processed again" : "nothing to reprocess";
      loadQueues();
    } catch (error) {
      $("action-result").textContent = error.message;
    }
  }

  function trialText(trial) {
    const head = [trial.control_id, trial.message_type].filter(Boolean).join(" ");
    if (trial.outcome !== "accepted") {
      return head + ": " + trial.outcome + " by " + trial.channel + ": " + trial.reason;
    }
    const lines = [head + ": accepted by " + trial.channel];
    for (const destination of trial.destinations) {
      if (destination.outcome !== "queued") {
        lines.push("  -> " + destination.destination + ": " + destination.outcome + ": " + destination.reason);
        continue;
      }
      lines.push("  -> " + destination.destination + ": would deliver, " + (destination.changes.length || "no") + " change(s)");
      for (const change of destination.changes) {
        if (change.kind === "changed") {
          const name = change.name ? " (" + change.name + ")" : "";
          lines.push("       " + change.path + name + ": '" + change.old + "' -> '" + change.new + "'");
        } else {
          lines.push("       " + (change.kind === "added" ? "+ " + change.path + ": " + change.new : "- " + change.path + ": " + change.old));
        }
      }
    }
    return lines.join("\n");
  }

  async function tryMessage() {
    if (shownId === null) {
      return;
    }
    const channel = $("try-channel").value.trim();
    const query = channel ? "?channel=" + encodeURIComponent(channel) : "";
    try {
      const trial = await call("POST", "/api/messages/" + encodeURIComponent(shownId) + "/try" + query);
      $("try-result").textContent = trialText(trial);
    } catch (error) {
      $("try-result").textContent = error.message;
    }
    $("try-panel").hidden = false;
  }

  function rowOf(event) {
    const row = event.target.closest("tr.result");
    return row ? row.dataset.id : null;
  }

  document.addEventListener("DOMContentLoaded", async function () {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("queues-refresh").addEventListener("click", loadQueues);
    $("nodes-refresh").addEventListener("click", loadNodes);
    $("search-form").addEventListener("submit", function (event) {
      event.preventDefault();
      oldestId = null;
      search(searchParams(), false);
    });
    $("more").addEventListener("click", () => search(lastSearch || new URLSearchParams(), true));
    $("results").addEventListener("click", function (event) {
      const id = rowOf(event);
      if (id) {
        openMessage(id);
      }
    });
    $("results").addEventListener("keydown", function (event) {
      const id = rowOf(event);
      if (id && event.key === "Enter") {
        openMessage(id);
      }
    });
    $("detail-close").addEventListener("click", closeDetail);
    $("resend").addEventListener("click", () => act("resend"));
    $("reprocess").addEventListener("click", () => act("reprocess"));
    $("try").addEventListener("click", tryMessage);
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
