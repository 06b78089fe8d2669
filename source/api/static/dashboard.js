// headless-wan dashboard: live task pages from Server-Sent Events (/v1/tasks/{id}/events).
// Written for this project; no build step. Autoescaped HTML comes from the server; this script only
// sets text, attributes and values, never HTML.
"use strict";

const TERMINAL = ["Complete", "Failed", "Cancelled"];

function showTask(task) {
  const status = document.getElementById("status");
  status.textContent = task.status;
  status.className = "status-" + task.status.replace(" ", "");
  document.getElementById("attempts").textContent = task.attempts;
  document.getElementById("progress").value = task.progress || 0;
  document.getElementById("message").textContent = task.message || "";
  document.getElementById("error").textContent = task.error || "";
  document.getElementById("cancel").disabled = TERMINAL.includes(task.status);
  const video = document.getElementById("output");
  if (task.output_url && video.getAttribute("src") !== task.output_url) {
    video.src = task.output_url;
    video.hidden = false;
  }
}

function followTask(section) {
  const id = section.dataset.taskId;
  const source = new EventSource("/v1/tasks/" + encodeURIComponent(id) + "/events");
  for (const kind of ["state", "progress"]) {
    source.addEventListener(kind, (e) => showTask(JSON.parse(e.data)));
  }
  source.addEventListener("end", (e) => { showTask(JSON.parse(e.data)); source.close(); });
  source.addEventListener("gone", () => source.close());
  document.getElementById("cancel").addEventListener("click", async (e) => {
    e.target.disabled = true;
    const r = await fetch("/v1/tasks/" + encodeURIComponent(id) + "/cancel",
                          {method: "POST", headers: {"X-Requested-With": "dashboard"}});
    if (r.ok) showTask(await r.json()); else e.target.disabled = false;
  });
}

function followList(table) {
  // The first few unfinished rows follow their own streams (a browser opens about 6 connections per
  // server; the rest would queue behind them); finished rows never change again.
  const live = [...table.querySelectorAll("tr[data-task-id]")]
    .filter((row) => !TERMINAL.includes(row.dataset.status)).slice(0, 4);
  for (const row of live) {
    const source = new EventSource("/v1/tasks/" + encodeURIComponent(row.dataset.taskId) + "/events");
    const update = (e) => {
      const task = JSON.parse(e.data);
      const cell = row.querySelector(".status");
      cell.textContent = task.status;
      cell.className = "status status-" + task.status.replace(" ", "");
      row.querySelector("progress").value = task.progress || 0;
    };
    source.addEventListener("state", update);
    source.addEventListener("progress", update);
    source.addEventListener("end", (e) => { update(e); source.close(); });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const section = document.getElementById("task");
  if (section) followTask(section);
  const table = document.getElementById("tasks");
  if (table) followList(table);
});
