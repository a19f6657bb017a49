// The console's messages page: search (by fields or content), the results, one message with every
// stage of it (as text and as a table of named fields), and resend or reprocess, one or all found,
// each after a confirmation that says how many, and Try (what the channel would do, nothing stored).
// Values go into the page as text, never as HTML.
"use strict";

(function () {
  const PAGE = 50;
  const { $, call, cell, clear, when, lines, confirmAction } = window.HL7;
  const STAGE_TITLES = {
    received: "Received",
    transformed: "Transformed",
    ack: "Our answer (ACK)",
    sent: "Sent to ",
    response: "Answer from ",
    error: "Error",
  };
  let lastSearch = null; // URLSearchParams of the current search (its filters)
  let oldestId = null; // for "Older messages"
  let shownId = null; // the message in the detail view
  let matching = null; // how many messages the current search's filters match

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
    if (!older) {
      countMatches();
    }
  }

  // How many messages the search's filters match: what "all N" acts on.
  async function countMatches() {
    $("bulk").hidden = true;
    try {
      matching = (await call("GET", "/api/messages/count?" + lastSearch.toString())).count;
    } catch (error) {
      matching = null;
      return;
    }
    $("bulk-count").textContent = matching === 1 ? "1 message matches" : matching + " messages match";
    $("bulk-resend").textContent = "Resend all " + matching;
    $("bulk-reprocess").textContent = "Reprocess all " + matching;
    $("bulk-resend").disabled = $("bulk-reprocess").disabled = matching === 0;
    $("bulk").hidden = false;
  }

  async function actOnAll(action) {
    if (matching === null) {
      return;
    }
    const count = matching;
    const verb = action === "resend" ? "Resend" : "Reprocess";
    const text = verb + " all " + count + " message(s) this search matches? "
      + (action === "resend" ? "Each is queued again for its destinations." : "Each runs through its channel again.");
    if (!(await confirmAction(text, verb + " " + count))) {
      return;
    }
    const query = new URLSearchParams(lastSearch);
    query.set("expected_count", String(count));
    try {
      const result = await call("POST", "/api/messages/" + action + "?" + query.toString());
      $("bulk-result").textContent = action === "resend"
        ? "Queued again: " + result.count + " message(s), " + result.deliveries + " delivery(ies)"
        : "Will be processed again: " + result.reprocessed + " of " + result.count + " message(s)";
    } catch (error) {
      $("bulk-result").textContent = error.message;
    }
    await refresh();
  }

  // After an action the list, the message shown and the queues are read again: nothing stale stays.
  async function refresh() {
    oldestId = null;
    await search(lastSearch || new URLSearchParams(), false);
    if (shownId !== null) {
      await openMessage(shownId, false);
    }
    window.HL7.loadQueues();
  }

  function field(list, name, value) {
    const term = document.createElement("dt");
    term.textContent = name;
    const definition = document.createElement("dd");
    definition.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
    list.appendChild(term);
    list.appendChild(definition);
  }

  // A stage's segments as rows: PID-5 (Patient Name), then its components PID-5.1 (Family Name) ...
  function segmentsTable(segments) {
    const table = document.createElement("table");
    table.className = "segments";
    const head = table.createTHead().insertRow();
    for (const title of ["Field", "Name", "Value"]) {
      const th = document.createElement("th");
      th.textContent = title;
      head.appendChild(th);
    }
    const body = table.createTBody();
    const counts = {};
    for (const segment of segments) {
      counts[segment.segment] = (counts[segment.segment] || 0) + 1;
      const place = segment.segment + (counts[segment.segment] > 1 ? "[" + counts[segment.segment] + "]" : "");
      const title = body.insertRow();
      title.className = "segment";
      cell(title, place);
      cell(title, "");
      cell(title, "");
      for (const f of segment.fields) {
        const row = body.insertRow();
        cell(row, place + "-" + f.position);
        cell(row, f.name || "");
        cell(row, f.value);
        f.repetitions.forEach(function (components, index) {
          const repetition = f.repetitions.length > 1 ? "[" + (index + 1) + "]" : "";
          for (const c of components) {
            const part = body.insertRow();
            part.className = "component";
            cell(part, place + "-" + f.position + repetition + "." + c.position);
            cell(part, c.name || "");
            cell(part, c.value);
          }
        });
      }
    }
    return table;
  }

  function showStages(stages) {
    const list = $("stages");
    clear(list);
    for (const stage of stages) {
      const block = document.createElement("div");
      block.className = "stage";
      block.dataset.stage = stage.stage;
      const heading = document.createElement("h4");
      heading.textContent = STAGE_TITLES[stage.stage] + (stage.destination && stage.stage !== "error"
        ? stage.destination : stage.destination ? " (" + stage.destination + ")" : "");
      block.appendChild(heading);
      if (stage.text === null) {
        // A viewer's: which stages there are, not what they hold.
        const hidden = document.createElement("p");
        hidden.className = "note";
        hidden.textContent = "(content not shown to your role)";
        block.appendChild(hidden);
        list.appendChild(block);
        continue;
      }
      const text = document.createElement("pre");
      text.className = "stage-text";
      text.textContent = lines(stage.text);
      block.appendChild(text);
      if (stage.segments.length) {
        const details = document.createElement("details");
        const summary = document.createElement("summary");
        summary.textContent = "As a table of fields";
        details.appendChild(summary);
        details.appendChild(segmentsTable(stage.segments));
        block.appendChild(details);
      }
      list.appendChild(block);
    }
    $("stages-empty").hidden = stages.length > 0;
  }

  async function openMessage(id, scroll) {
    let message;
    try {
      message = await call("GET", "/api/messages/" + encodeURIComponent(id));
    } catch (error) {
      $("search-error").textContent = error.message;
      return;
    }
    shownId = message.id;
    $("detail-id").textContent = String(message.id);
    if (scroll !== false) {
      $("action-result").textContent = "";
      $("try-panel").hidden = true;
    }
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
    showStages(message.stages);

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
    $("detail").dataset.open = "true";
    if (scroll !== false) {
      $("detail").scrollIntoView();
    }
  }

  function closeDetail() {
    shownId = null;
    $("detail").hidden = true;
    $("detail").dataset.open = "false";
    $("detail-raw").textContent = "";
    $("detail-ack").textContent = "";
    $("try-result").textContent = "";
    $("try-panel").hidden = true;
    clear($("stages"));
  }

  async function act(action) {
    if (shownId === null) {
      return;
    }
    const id = shownId;
    const text = action === "resend"
      ? "Resend message " + id + "? It is queued again for its destinations."
      : "Reprocess message " + id + "? It runs through its channel again.";
    if (!(await confirmAction(text, action === "resend" ? "Resend" : "Reprocess"))) {
      return;
    }
    try {
      const result = await call("POST", "/api/messages/" + encodeURIComponent(id) + "/" + action);
      $("action-result").textContent =
        action === "resend" ? "queued " + result.deliveries.length + " delivery(ies)" : result.reprocessed ? "will be processed again" : "nothing to reprocess";
    } catch (error) {
      $("action-result").textContent = error.message;
    }
    await refresh();
  }

  // What Try found: the channel's verdict and, per destination, the fields it would change.
  function trialText(trial) {
    const head = [trial.control_id, trial.message_type].filter(Boolean).join(" ");
    if (trial.outcome !== "accepted") {
      return head + ": " + trial.outcome + " by " + trial.channel + ": " + trial.reason;
    }
    const shown = [head + ": accepted by " + trial.channel];
    for (const destination of trial.destinations) {
      if (destination.outcome !== "queued") {
        shown.push("  -> " + destination.destination + ": " + destination.outcome + ": " + destination.reason);
        continue;
      }
      shown.push("  -> " + destination.destination + ": would deliver, " + (destination.changes.length || "no") + " change(s)");
      for (const change of destination.changes) {
        if (change.kind === "changed") {
          const name = change.name ? " (" + change.name + ")" : "";
          shown.push("       " + change.path + name + ": '" + change.old + "' -> '" + change.new + "'");
        } else {
          shown.push("       " + (change.kind === "added" ? "+ " + change.path + ": " + change.new : "- " + change.path + ": " + change.old));
        }
      }
    }
    return shown.join("\n");
  }

  // Try: run the message shown through its channel (or another), nothing stored or sent.
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

  $("search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    oldestId = null;
    $("bulk-result").textContent = "";
    search(window.HL7.formParams($("search-form")), false);
  });
  $("more").addEventListener("click", () => search(lastSearch || new URLSearchParams(), true));
  window.HL7.onRowOpen($("results"), (id) => openMessage(id));
  $("detail-close").addEventListener("click", closeDetail);
  $("resend").addEventListener("click", () => act("resend"));
  $("reprocess").addEventListener("click", () => act("reprocess"));
  $("try").addEventListener("click", tryMessage);
  $("bulk-resend").addEventListener("click", () => actOnAll("resend"));
  $("bulk-reprocess").addEventListener("click", () => actOnAll("reprocess"));

  window.HL7.register("messages", function () {
    oldestId = null;
    search(new URLSearchParams(), false);
  });
  window.HL7.reset.push(function () {
    closeDetail();
    clear($("results").tBodies[0]);
    $("bulk").hidden = true;
    $("bulk-result").textContent = "";
  });
})();
