// The admin views of the hl7engine console: the audit trail and the configuration (as loaded, its
// history and the difference between two applied configs). Shown only to the admin role
// (console.css); the server refuses them to the others. Values go into the page as text only.
"use strict";

(function () {
  const PAGE = 100;
  const { $, cell, clear, formParams, utc: when } = window.HL7;
  let auditOldest = null; // the smallest id shown, for "Older entries"

  // A 401 shows here as the error of the view, as every other refusal does.
  function call(path) {
    return window.HL7.call("GET", path, undefined, { stayOn401: true });
  }

  async function loadAudit(older) {
    const query = formParams($("audit-form"));
    query.set("limit", String(PAGE));
    if (older && auditOldest !== null) {
      query.set("before_id", String(auditOldest));
    }
    const body = $("audit-table").tBodies[0];
    let entries;
    try {
      entries = await call("/api/audit?" + query.toString());
    } catch (error) {
      $("audit-error").textContent = error.message;
      return;
    }
    $("audit-error").textContent = "";
    if (!older) {
      clear(body);
    }
    for (const entry of entries) {
      const row = body.insertRow();
      row.className = "audit-entry";
      cell(row, entry.id);
      cell(row, when(entry.at));
      cell(row, entry.user);
      cell(row, entry.action);
      cell(row, entry.message_id);
      cell(row, entry.remote);
      cell(row, entry.detail);
      auditOldest = entry.id;
    }
    $("audit-more").hidden = entries.length < PAGE;
  }

  function choice(row, name, id, checked) {
    const td = document.createElement("td");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = name;
    input.value = String(id);
    input.checked = checked;
    input.setAttribute("aria-label", name + " " + id);
    td.appendChild(input);
    row.appendChild(td);
  }

  async function loadConfig() {
    let current, history;
    try {
      [current, history] = await Promise.all([call("/api/config"), call("/api/config/history")]);
    } catch (error) {
      $("config-error").textContent = error.message;
      return;
    }
    $("config-error").textContent = "";
    const summary = current.summary || { channels: [], users: [] };
    const channels = $("config-channels").tBodies[0];
    clear(channels);
    for (const channel of summary.channels) {
      const row = channels.insertRow();
      cell(row, channel.name);
      cell(row, channel.enabled ? "yes" : "no");
      cell(row, channel.source);
      cell(row, channel.filters);
      cell(row, channel.transforms);
      cell(row, channel.destinations.map((d) => d.name + " (" + d.type + ")").join(", "));
    }
    const users = $("config-users").tBodies[0];
    clear(users);
    for (const user of summary.users) {
      const row = users.insertRow();
      cell(row, user.name);
      cell(row, user.role);
    }
    const applied = current.applied;
    $("config-applied").textContent = applied ? "(" + applied.id + ", " + when(applied.applied_at) + ", " + applied.source + ")" : "";
    $("config-text").textContent = applied ? applied.content : "(no configuration recorded yet)";
    const rows = $("config-history").tBodies[0];
    clear(rows);
    history.forEach(function (record, index) {
      const row = rows.insertRow();
      cell(row, record.id);
      cell(row, when(record.applied_at));
      cell(row, record.source);
      cell(row, record.changes);
      choice(row, "from", record.id, index === 1);
      choice(row, "to", record.id, index === 0);
    });
    $("config-diff").disabled = history.length < 2;
    clear($("config-diff-text"));
  }

  function chosen(name) {
    const input = document.querySelector('#config-history input[name="' + name + '"]:checked');
    return input ? input.value : null;
  }

  async function showDiff() {
    const from = chosen("from");
    const to = chosen("to");
    const pre = $("config-diff-text");
    clear(pre);
    if (from === null || to === null) {
      pre.textContent = "choose two configurations";
      return;
    }
    let answer;
    try {
      answer = await call("/api/config/diff?" + new URLSearchParams({ from, to }).toString());
    } catch (error) {
      pre.textContent = error.message;
      return;
    }
    if (!answer.diff) {
      pre.textContent = "(no difference)";
      return;
    }
    for (const line of answer.diff.split("\n")) {
      const span = document.createElement("span");
      span.textContent = line + "\n";
      if (line.startsWith("+") && !line.startsWith("+++")) {
        span.className = "diff-add";
      } else if (line.startsWith("-") && !line.startsWith("---")) {
        span.className = "diff-remove";
      }
      pre.appendChild(span);
    }
  }

  document.addEventListener("hl7engine:session", function (event) {
    if (event.detail.role !== "admin") {
      return;
    }
    auditOldest = null;
    loadAudit(false);
    loadConfig();
  });

  document.addEventListener("DOMContentLoaded", function () {
    $("audit-form").addEventListener("submit", function (event) {
      event.preventDefault();
      auditOldest = null;
      loadAudit(false);
    });
    $("audit-more").addEventListener("click", () => loadAudit(true));
    $("config-refresh").addEventListener("click", loadConfig);
    $("config-diff").addEventListener("click", showDiff);
  });
})();
