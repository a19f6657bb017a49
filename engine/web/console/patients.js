// The console's patients page: find a person by identifier, name or birth date, then everything the
// record holds of them (identifiers with their systems, visits, appointments, results with their
// corrections, allergies, coverage, charges, merges, history), and the record's identity worklist
// when the engine serves one. Values go into the page as text, never as HTML.
"use strict";

(function () {
  const { $, call, cell, clear, when } = window.HL7;
  // Columns never shown: row keys and bookkeeping (the message a value came from is kept in history).
  const HIDDEN = new Set(["id", "patient_id", "message_id", "as_of", "updated_at", "created_at", "list_digests"]);
  const TIME_KEY = /(_at|_time|^at)$/;
  // The sections of one person, in order: [key of get_patient's JSON, title].
  const SECTIONS = [
    ["identifiers", "Identifiers"],
    ["names", "Names"],
    ["addresses", "Addresses"],
    ["telecoms", "Phones and e-mail"],
    ["contacts", "Contacts"],
    ["visits", "Visits"],
    ["appointments", "Appointments"],
    ["orders", "Orders"],
    ["results", "Results (C: corrected)"],
    ["allergies", "Allergies"],
    ["diagnoses", "Diagnoses"],
    ["procedures", "Procedures"],
    ["coverages", "Coverage"],
    ["transactions", "Charges"],
    ["merges", "Merges"],
    ["conflicts", "Conflicts"],
    ["history", "History"],
  ];

  function text(value) {
    if (value === null || value === undefined) {
      return "";
    }
    if (Array.isArray(value)) {
      return value.length + " item(s)";
    }
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // Rows of objects as a table of the columns any of them has a value in.
  function rowsTable(rows) {
    const table = document.createElement("table");
    const columns = [];
    for (const row of rows) {
      for (const [key, value] of Object.entries(row)) {
        if (!HIDDEN.has(key) && !columns.includes(key) && value !== null && value !== "" && !Array.isArray(value)) {
          columns.push(key);
        }
      }
    }
    const head = table.createTHead().insertRow();
    for (const column of columns) {
      const th = document.createElement("th");
      th.textContent = column.replace(/_/g, " ");
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      if (row.status === "C") {
        tr.className = "corrected";
      }
      for (const column of columns) {
        cell(tr, TIME_KEY.test(column) && row[column] ? when(row[column]) : text(row[column]));
      }
    }
    return table;
  }

  function nameOf(patient) {
    const name = (patient.names || [])[0];
    return name ? [name.family, name.given].filter(Boolean).join(", ") : "";
  }

  async function find(event) {
    event.preventDefault();
    $("patient-error").textContent = "";
    let found;
    try {
      found = await call("GET", "/api/patients?" + window.HL7.formParams($("patient-form")).toString());
    } catch (error) {
      $("patient-error").textContent = error.message;
      return;
    }
    const body = $("patient-results").tBodies[0];
    clear(body);
    for (const patient of found.patients) {
      const row = body.insertRow();
      row.className = "result";
      row.dataset.id = String(patient.id);
      row.tabIndex = 0;
      cell(row, patient.id);
      cell(row, nameOf(patient));
      cell(row, patient.birth_date);
      cell(row, patient.sex);
      cell(row, (patient.identifiers || []).map((i) => [i.authority, i.value].filter(Boolean).join("|")).join(", "));
    }
    $("patient-none").hidden = found.patients.length > 0;
  }

  async function open(id) {
    let patient;
    let history;
    try {
      [patient, history] = await Promise.all([
        call("GET", "/api/patients/" + encodeURIComponent(id)),
        call("GET", "/api/patients/" + encodeURIComponent(id) + "/history"),
      ]);
    } catch (error) {
      $("patient-error").textContent = error.message;
      return;
    }
    $("person-title").textContent = nameOf(patient) + " (" + patient.id + ")";
    const facts = $("person-facts");
    clear(facts);
    for (const [key, value] of Object.entries(patient)) {
      if (!Array.isArray(value) && !HIDDEN.has(key) && value !== null && value !== "") {
        const term = document.createElement("dt");
        term.textContent = key.replace(/_/g, " ");
        const definition = document.createElement("dd");
        definition.textContent = TIME_KEY.test(key) ? when(value) : text(value);
        facts.appendChild(term);
        facts.appendChild(definition);
      }
    }
    const sections = {
      ...patient,
      orders: (patient.orders || []).map(({ observations, ...order }) => order),
      results: (patient.orders || []).flatMap((order) => order.observations || []),
      history: history.history,
    };
    const place = $("person-sections");
    clear(place);
    for (const [key, title] of SECTIONS) {
      const rows = sections[key] || [];
      const block = document.createElement("section");
      block.className = "person-section";
      block.dataset.section = key;
      const heading = document.createElement("h3");
      heading.textContent = title + " (" + rows.length + ")";
      block.appendChild(heading);
      if (rows.length) {
        block.appendChild(rowsTable(rows));
      }
      place.appendChild(block);
    }
    $("person").hidden = false;
  }

  // The identity worklist, when the engine serves one (GET /api/record/worklist answers 200).
  async function loadWorklist() {
    const response = await fetch("/api/record/worklist", {
      headers: { "X-Requested-With": "hl7engine-console" }, credentials: "same-origin",
    });
    if (response.status !== 200) {
      $("worklist").hidden = true;
      return;
    }
    const data = await response.json();
    const rows = Array.isArray(data) ? data : data.items || data.worklist || [];
    const place = $("worklist-table");
    clear(place);
    place.appendChild(rowsTable(rows));
    $("worklist").hidden = false;
  }

  $("patient-form").addEventListener("submit", find);
  window.HL7.onRowOpen($("patient-results"), open);
  $("person-close").addEventListener("click", () => { $("person").hidden = true; });

  window.HL7.register("patients", loadWorklist);
  window.HL7.reset.push(function () {
    clear($("patient-results").tBodies[0]);
    clear($("person-sections"));
    $("person").hidden = true;
    $("worklist").hidden = true;
  });
})();
