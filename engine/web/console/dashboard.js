// The console's dashboard: listeners, channels and destinations with their counts over a window,
// queues, pauses and alerts, read again every few seconds while the console is shown.
// It starts and stops itself by watching #app-view (shown once logged in). Every value from the
// server goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const EVERY_MS = 3000; // how often the dashboard is read again while it is shown
  const { $, cell, clear, utc: when } = window.HL7;
  let timer = null;

  // A 401 shows here as the dashboard's error, as every other refusal does.
  function call(method, path) {
    return window.HL7.call(method, path, undefined, { stayOn401: true });
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) {
      return "";
    }
    if (seconds < 60) {
      return Math.round(seconds) + " s";
    }
    if (seconds < 3600) {
      return Math.round(seconds / 60) + " min";
    }
    return (seconds / 3600).toFixed(1) + " h";
  }

  function windowName() {
    return $("dash-window").value;
  }

  function actionButton(row, paused, path) {
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = paused ? "dash-resume" : "dash-pause";
    button.textContent = paused ? "Resume" : "Pause";
    button.addEventListener("click", async function () {
      button.disabled = true;
      try {
        await call("POST", path + (paused ? "/resume" : "/pause"));
        $("dash-error").textContent = "";
      } catch (error) {
        $("dash-error").textContent = error.message;
      }
      await load();
    });
    td.appendChild(button);
    row.appendChild(td);
  }

  function stateOf(paused, halted) {
    if (halted) {
      return "halted";
    }
    return paused ? "paused" : "running";
  }

  function showChannels(view) {
    const body = $("dash-channels").tBodies[0];
    clear(body);
    for (const channel of view.channels) {
      const row = body.insertRow();
      row.className = "dash-channel" + (channel.paused ? " dash-paused" : "");
      row.dataset.channel = channel.name;
      const c = channel.counts;
      cell(row, channel.name, "name");
      cell(row, "");
      cell(row, stateOf(channel.paused, false), "state");
      cell(row, c.received, "received");
      cell(row, c.filtered, "filtered");
      cell(row, channel.queued_now, "queued");
      cell(row, c.sent, "sent");
      cell(row, c.errored, "errored");
      cell(row, channel.received_per_minute, "per-minute");
      cell(row, "");
      cell(row, "");
      actionButton(row, channel.paused, "/api/channels/" + encodeURIComponent(channel.name));
      for (const dest of channel.destinations) {
        const line = body.insertRow();
        line.className = "dash-destination" + (dest.held ? " dash-paused" : "") + (dest.last_error ? " dash-failed" : "");
        line.dataset.channel = channel.name;
        line.dataset.destination = dest.name;
        cell(line, "");
        cell(line, dest.name + " (" + dest.type + ")", "name");
        cell(line, dest.held && !dest.paused ? "paused (channel)" : stateOf(dest.paused, dest.halted), "state");
        cell(line, "");
        cell(line, dest.counts.filtered, "filtered");
        cell(line, dest.queue_depth, "depth");
        cell(line, dest.counts.sent, "sent");
        cell(line, dest.counts.errored, "errored");
        cell(line, dest.sent_per_minute, "per-minute");
        cell(line, age(dest.oldest_queued_age_seconds), "oldest");
        const error = dest.failing_reason || dest.last_error;
        cell(line, error ? error + (dest.last_error_at && !dest.failing_reason ? " (" + when(dest.last_error_at) + ")" : "") : "", "last-error");
        // A destination held by its channel's pause resumes with the channel.
        actionButton(
          line,
          Boolean(dest.paused),
          "/api/channels/" + encodeURIComponent(channel.name) + "/destinations/" + encodeURIComponent(dest.name)
        );
      }
    }
    $("dash-at").textContent = "as of " + when(view.at) + ", counts over the last " + view.window;
  }

  function showListeners(view) {
    const body = $("dash-listeners").tBodies[0];
    clear(body);
    for (const listener of view.listeners) {
      const row = body.insertRow();
      row.dataset.listener = listener.name;
      row.className = listener.bound ? "" : "dash-down";
      cell(row, listener.name, "name");
      cell(row, listener.type);
      cell(row, listener.bound ? "bound" + (listener.port ? " :" + listener.port : "") : "down", "bound");
      cell(row, listener.connections, "connections");
      cell(row, listener.received, "received");
      cell(row, listener.received_per_minute, "per-minute");
      cell(row, when(listener.last_received_at), "last");
    }
  }

  function showAlerts(view) {
    const body = $("dash-alerts").tBodies[0];
    clear(body);
    for (const alert of view.alerts) {
      const row = body.insertRow();
      row.dataset.rule = alert.name;
      row.className = alert.firing ? "dash-firing" : "";
      cell(row, alert.name, "name");
      cell(row, alert.kind);
      cell(row, alert.firing ? "firing" : "ok", "state");
      cell(row, alert.detail, "detail");
      cell(row, when(alert.fired_at), "fired");
      cell(row, when(alert.cleared_at), "cleared");
    }
    $("dash-alerts-section").hidden = view.alerts.length === 0;
  }

  async function load() {
    const query = "?window=" + encodeURIComponent(windowName());
    try {
      const [channels, listeners] = await Promise.all([
        call("GET", "/api/channels" + query),
        call("GET", "/api/listeners" + query),
      ]);
      showChannels(channels);
      showListeners(listeners);
    } catch (error) {
      $("dash-error").textContent = error.message;
      return;
    }
    try {
      showAlerts(await call("GET", "/api/alerts"));
    } catch (error) {
      $("dash-alerts-section").hidden = true; // no alerts API (or not allowed): nothing to show
    }
  }

  function start() {
    if (timer === null) {
      load();
      timer = setInterval(load, EVERY_MS);
    }
  }

  function stop() {
    if (timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const app = $("app-view");
    $("dash-window").addEventListener("change", load);
    $("dash-refresh").addEventListener("click", load);
    const follow = () => (app.hidden ? stop() : start());
    new MutationObserver(follow).observe(app, { attributes: true, attributeFilter: ["hidden"] });
    follow();
  });
})();
