// Keeps each unfinished row of the job list live through its status stream.
(function () {
  "use strict";
  const terminal = new Set(["success", "failed", "cancelled"]);
  const rows = document.querySelectorAll("tr[data-job-id]");
  rows.forEach(function (row) {
    if (terminal.has(row.dataset.status)) return;
    const source = new EventSource("/notify/" + row.dataset.jobId + "/stream");
    source.onmessage = function (message) {
      const event = JSON.parse(message.data);
      row.dataset.status = event.status;
      const badge = row.querySelector(".status");
      badge.className = "status status-" + event.status;
      badge.dataset.status = event.status;
      badge.lastChild.textContent = event.status;
      row.querySelector(".attempts").textContent = event.attempts;
      if (terminal.has(event.status)) source.close();
    };
  });
})();
