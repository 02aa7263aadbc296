// Follows the job's status stream and updates the page without a reload.
(function () {
  "use strict";
  const card = document.getElementById("job");
  if (!card) return;
  const terminal = new Set(["success", "failed", "cancelled"]);
  const jobId = card.dataset.jobId;

  function badge(status) {
    const span = document.createElement("span");
    span.className = "status status-" + status;
    span.dataset.status = status;
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    span.append(dot, document.createTextNode(status));
    return span;
  }

  function show(event) {
    card.dataset.status = event.status;
    card.dataset.version = String(event.version);
    document.getElementById("job-status").replaceChildren(badge(event.status));
    document.getElementById("job-error").textContent = event.error_message || "";
    const attempts = document.getElementById("job-attempts");
    attempts.textContent = event.attempts + " of " + event.max_attempts;
    const item = document.createElement("li");
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = new Date().toLocaleTimeString();
    item.append(badge(event.status), document.createTextNode(" "), when);
    document.getElementById("timeline").append(item);
    if (terminal.has(event.status)) {
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
    }
  }

  if (terminal.has(card.dataset.status)) return;
  const source = new EventSource("/notify/" + jobId + "/stream");
  source.onmessage = function (message) {
    const event = JSON.parse(message.data);
    if (String(event.version) === card.dataset.version) return;
    show(event);
    if (terminal.has(event.status)) source.close();
  };
})();
