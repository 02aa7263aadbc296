// Follows the job's status stream and updates the page without a reload.
// Everything from the server is set with textContent, never as HTML.
(function () {
  "use strict";
  const card = document.getElementById("job");
  if (!card) return;
  const terminal = new Set(["success", "failed", "cancelled"]);
  const jobId = card.dataset.jobId;

  function byId(id) {
    return document.getElementById(id);
  }

  function badge(status) {
    const span = document.createElement("span");
    span.className = "status status-" + status;
    span.dataset.status = status;
    span.textContent = status;
    return span;
  }

  // The same form as the server's: "2026-12-04 14:33:03 UTC".
  function when(iso) {
    return iso ? new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "—";
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
  }

  function addToTimeline(event) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = when(new Date().toISOString());
    item.append(time, " ", badge(event.status));
    if (event.error_message) {
      const note = document.createElement("span");
      note.className = "note error-text";
      note.textContent = event.error_message;
      item.append(" ", note);
    }
    byId("timeline").append(item);
  }

  function showStatus(event) {
    card.dataset.status = event.status;
    card.dataset.version = String(event.version);
    byId("job-status").replaceChildren(badge(event.status));
    byId("job-attempts").textContent = event.attempts + " of " + event.max_attempts;
    byId("job-error").textContent = event.error_message || "";
    byId("job-error-box").hidden = !event.error_message;
    addToTimeline(event);
    if (terminal.has(event.status)) {
      const cancel = byId("cancel-form");
      if (cancel) cancel.remove();
      byId("live-note").textContent = "This job has ended.";
    }
  }

  // Times and attempts are not in the event: read the job once per change.
  async function refreshDetails() {
    const response = await fetch("/notify/" + jobId, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!response.ok) return;
    const job = await response.json();
    byId("job-started").textContent = when(job.started_at);
    byId("job-finished").textContent = when(job.finished_at);
    const rows = byId("attempt-rows");
    rows.replaceChildren();
    job.attempt_history.forEach(function (attempt) {
      const row = rows.insertRow();
      cell(row, String(attempt.number), "num");
      cell(row, when(attempt.started_at), "when wide");
      cell(row, attempt.duration_ms + " ms", "num");
      cell(row, attempt.response_status === null ? "—" : String(attempt.response_status));
      cell(row, attempt.error || "", "error-text");
    });
    byId("no-attempts").hidden = job.attempt_history.length > 0;
  }

  if (terminal.has(card.dataset.status)) return;
  const source = new EventSource("/notify/" + jobId + "/stream");
  source.onmessage = function (message) {
    const event = JSON.parse(message.data);
    if (event.version <= Number(card.dataset.version)) return;
    showStatus(event);
    refreshDetails();
    if (terminal.has(event.status)) source.close();
  };
})();
