// Keeps each unfinished row of the job list live. One stream carries every
// row: a browser opens at most six connections to a host, so one stream
// per row would leave no connection for clicking a link.
(function () {
  "use strict";
  const terminal = new Set(["success", "failed", "cancelled"]);
  const rows = new Map();
  document.querySelectorAll("tr[data-job-id]").forEach(function (row) {
    if (!terminal.has(row.dataset.status)) rows.set(row.dataset.jobId, row);
  });
  if (rows.size === 0) return;

  function show(row, event) {
    row.dataset.status = event.status;
    row.dataset.version = String(event.version);
    const badge = row.querySelector(".status");
    badge.className = "status status-" + event.status;
    badge.dataset.status = event.status;
    badge.textContent = event.status;
    row.querySelector(".attempts").textContent = event.attempts;
  }

  const query = Array.from(rows.keys(), function (id) {
    return "job=" + encodeURIComponent(id);
  }).join("&");
  const source = new EventSource("/notify/stream?" + query);
  source.onmessage = function (message) {
    const event = JSON.parse(message.data);
    const row = rows.get(event.id);
    if (!row || event.version <= Number(row.dataset.version)) return;
    show(row, event);
    if (terminal.has(event.status)) rows.delete(event.id);
    if (rows.size === 0) source.close();
  };
})();
