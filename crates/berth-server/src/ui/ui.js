// Live run output (the only script of the web UI): follows /runs/:id/events, a
// Server-Sent Events stream that replays from the last event shown (the browser resends
// Last-Event-ID on reconnect). Without JavaScript the page shows the output up to its load.
(function () {
  "use strict";
  var out = document.getElementById("output");
  if (!out || !window.EventSource || out.dataset.done === "true") return;
  var status = document.getElementById("run-status");
  var live = document.getElementById("live");
  var url = out.dataset.events + "?after=" + encodeURIComponent(out.dataset.after || "0");
  var source = new EventSource(url);
  if (live) live.textContent = "Live: following the output.";
  function text(payload) {
    if (payload && typeof payload.text === "string") return payload.text;
    if (payload && typeof payload.message === "string") return payload.message + "\n";
    return JSON.stringify(payload) + "\n";
  }
  function append(e) {
    var ev;
    try { ev = JSON.parse(e.data); } catch (_) { return; }
    var span = document.createElement("span");
    span.className = ev.stream === "stdout" ? "stdout" : ev.stream === "stderr" ? "stderr" : "meta";
    var t = text(ev.payload);
    if (span.className === "meta") t = "[" + ev.stream + "] " + t;
    span.textContent = t;
    out.appendChild(span);
    out.dataset.after = String(ev.seq);
    out.scrollTop = out.scrollHeight;
  }
  ["stdout", "stderr", "lifecycle", "status", "phase", "system", "result", "message"].forEach(function (name) {
    source.addEventListener(name, append);
  });
  source.addEventListener("end", function (e) {
    source.close();
    var end = {};
    try { end = JSON.parse(e.data); } catch (_) {}
    if (status && end.status) { status.textContent = end.status; status.className = "badge b-" + end.status; }
    var cancel = document.getElementById("cancel");
    if (cancel) cancel.hidden = true;
    if (live) live.textContent = "The run ended (" + (end.status || "done") + ").";
    out.dataset.done = "true";
  });
})();
