// The queue and history panel: pause/resume, pending jobs reordered by dragging and cancelled one
// by one, the running job cancelled by id; a history of runs with name, time, duration and
// thumbnails, prompts the server refused among them, and two runs compared side by side.
import { element } from "./widgets.js";
import { summariseRun, promptDifferences, comparisonLabels, filesToCompare } from "./runs.js";
import { previewElement } from "./execution.js";

const REFUSED_KEY = "vidgraph.refused";
const KEPT_REFUSED = 20;
const HISTORY_SHOWN = 30;

function readRefused() {
  try { return JSON.parse(localStorage.getItem(REFUSED_KEY) || "[]"); } catch { return []; }
}

function actionButton(text, action, title = "") {
  const b = element("button", "", text);
  b.type = "button";
  b.dataset.action = action;
  if (title) b.title = title;
  return b;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const duration = (s) => (s == null ? "" : s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`);

export class QueuePanel {
  constructor(app) {
    this.app = app;
    this.root = document.querySelector("#queue-panel");
    this.history = {};
    this.comparing = new Set();
    this.root.addEventListener("click", (e) => this.onClick(e));
    this.root.addEventListener("change", (e) => this.onCompareToggle(e));
    this.installDragging();
  }

  get isOpen() { return !this.root.hidden; }

  // Opening or closing the panel narrows or widens the canvas: the graph stays in view.
  toggle() {
    const { view } = this.app;
    const wasAllVisible = view.allNodesVisible();
    this.root.hidden = !this.root.hidden;
    document.querySelector("#panel-button").setAttribute("aria-expanded", String(this.isOpen));
    if (wasAllVisible && !view.allNodesVisible()) view.fitView();
    this.refresh();
  }

  refresh() {
    if (!this.isOpen) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.render(), 100);
  }

  recordRefused({ name, body, lines, workflow }) {
    const list = readRefused();
    list.push({ id: `refused-${Date.now()}`, time: Date.now(), name, body, lines, workflow });
    try { localStorage.setItem(REFUSED_KEY, JSON.stringify(list.slice(-KEPT_REFUSED))); } catch { /* full: the toast said it */ }
    this.refresh();
  }

  async render() {
    const { api } = this.app;
    let queue, state, history;
    try {
      [queue, state, history] = await Promise.all([api.getQueue(), api.getQueueState().catch(() => null), api.getHistory(HISTORY_SHOWN)]);
    } catch { return; }
    this.renderQueue(queue, state);
    this.history = history;
    this.renderHistory(history);
  }

  renderQueue(queue, state) {
    const names = new Map([...(queue.queue_running ?? []), ...(queue.queue_pending ?? [])]
      .map((item) => [item[1], item[3]?.vidgraph_name ?? null]));
    const paused = Boolean(state?.paused);
    this.root.classList.toggle("paused", paused);
    const pause = this.root.querySelector("[data-action=pause]");
    pause.textContent = paused ? "Resume" : "Pause";
    pause.title = paused ? "Start queued jobs again" : "Stop starting queued jobs (the running one finishes)";
    pause.hidden = !state;
    this.root.querySelector("#queue-state").textContent = paused ? "paused" : "";
    const item = (promptId, kind, position) => {
      const li = element("li", `queue-${kind}`);
      li.dataset.promptId = promptId;
      if (kind === "pending") {
        li.draggable = true;
        li.dataset.position = String(position);
        li.append(element("span", "drag-handle", "⠿"));
      }
      li.append(element("span", "job-name", `${kind === "pending" ? `${position + 1}. ` : ""}${names.get(promptId) ?? "prompt"}`),
        element("span", "job-id", String(promptId).slice(0, 8)),
        actionButton(kind === "running" ? "Stop" : "Cancel", "cancel", kind === "running" ? "Interrupt this job" : "Remove it from the queue"));
      return li;
    };
    const running = state?.running?.map((j) => j.prompt_id) ?? (queue.queue_running ?? []).map((e) => e[1]);
    const pending = state?.pending?.map((j) => j.prompt_id) ?? (queue.queue_pending ?? []).map((e) => e[1]);
    this.root.querySelector("#queue-running").replaceChildren(...running.map((id) => item(id, "running")));
    this.root.querySelector("#queue-pending").replaceChildren(...pending.map((id, i) => item(id, "pending", i)));
  }

  renderHistory(history) {
    const runs = Object.entries(history).map(([id, entry]) => summariseRun(id, entry));
    const refused = readRefused().map((r) => ({ ...r, refused: true, startedAt: r.time }));
    const all = [...runs, ...refused].sort((a, b) => (b.startedAt ?? 0) - (a.startedAt ?? 0));
    this.comparing = new Set([...this.comparing].filter((id) => history[id]));
    const list = this.root.querySelector("#history-list");
    list.replaceChildren(...all.map((run) => (run.refused ? this.refusedItem(run) : this.runItem(run))));
    list.dataset.rendered = String(Number(list.dataset.rendered ?? 0) + 1);
    this.updateCompareButton();
  }

  runItem(run) {
    const li = element("li", `history-${run.status}`);
    li.dataset.promptId = run.promptId;
    const thumbs = element("div", "thumbs");
    for (const file of run.files.slice(0, 3)) thumbs.append(previewElement(this.app.api.viewUrl(file), file.filename, true));
    const meta = element("div", "meta");
    meta.append(element("strong", "run-name", run.name ?? "prompt"), element("span", `run-status status-${run.status}`, run.status));
    const facts = [run.startedAt != null ? clock(run.startedAt) : null, duration(run.seconds), `#${run.promptId.slice(0, 8)}`].filter(Boolean);
    meta.append(element("small", "run-facts", facts.join(" · ")));
    if (run.error) meta.append(element("small", "history-error", run.error));
    const actions = element("div", "run-actions");
    const entry = this.history[run.promptId];
    if (entry?.prompt?.[3]?.extra_pnginfo?.workflow || entry?.prompt?.[2]) actions.append(actionButton("Load", "load-history", "Open this run's workflow and results in a tab"));
    if (run.files.length) {
      const tick = Object.assign(document.createElement("input"), { type: "checkbox", className: "compare-pick", checked: this.comparing.has(run.promptId) });
      const label = element("label", "compare-label");
      label.append(tick, " compare");
      actions.append(label);
    }
    li.append(thumbs, meta, actions);
    return li;
  }

  refusedItem(run) {
    const li = element("li", "history-refused");
    li.dataset.refusedId = run.id;
    const meta = element("div", "meta");
    meta.append(element("strong", "run-name", run.name ?? "prompt"), element("span", "run-status status-refused", "not queued"));
    meta.append(element("small", "run-facts", clock(run.time)));
    for (const line of (run.lines ?? []).slice(0, 3)) meta.append(element("small", "history-error", line));
    const actions = element("div", "run-actions");
    if (run.workflow) actions.append(actionButton("Load", "load-refused", "Open it in a tab with its errors marked"));
    li.append(element("div", "thumbs"), meta, actions);
    return li;
  }

  onCompareToggle(e) {
    if (!e.target.classList.contains("compare-pick")) return;
    const id = e.target.closest("li").dataset.promptId;
    if (e.target.checked) this.comparing.add(id); else this.comparing.delete(id);
    // Two at most: the oldest pick makes room for the newest.
    while (this.comparing.size > 2) {
      const first = this.comparing.values().next().value;
      this.comparing.delete(first);
      const box = this.root.querySelector(`li[data-prompt-id="${CSS.escape(first)}"] .compare-pick`);
      if (box) box.checked = false;
    }
    this.updateCompareButton();
  }

  updateCompareButton() {
    const button = this.root.querySelector("[data-action=compare]");
    button.disabled = this.comparing.size !== 2;
    button.title = button.disabled ? "Tick two runs to see them side by side" : "Show the two runs side by side, frame by frame";
  }

  compare() {
    // Older run on the left.
    const [a, b] = [...this.comparing].map((id) => ({ id, entry: this.history[id] }))
      .map(({ id, entry }) => ({ run: summariseRun(id, entry), prompt: entry.prompt?.[2] }))
      .sort((x, y) => (x.run.startedAt ?? 0) - (y.run.startedAt ?? 0));
    const files = filesToCompare(a.run, b.run);
    if (!files) { this.app.toast("These two runs have no output file in common to compare", "warning"); return; }
    const [labelA, labelB] = comparisonLabels(promptDifferences(a.prompt, b.prompt));
    this.app.player.open([{ files: [files[0]], label: labelA }, { files: [files[1]], label: labelB }],
      { title: `${a.run.name ?? "prompt"}: ${labelA} vs ${labelB}`, urlOf: (f) => this.app.api.viewUrl(f) });
  }

  async onClick(e) {
    const button = e.target.closest("button");
    const action = button?.dataset.action;
    if (!action) return;
    const li = e.target.closest("li");
    const { api } = this.app;
    if (action === "cancel") await api.cancelJob(li.dataset.promptId);
    else if (action === "pause") await api.setPaused(button.textContent === "Pause");
    else if (action === "clear-queue") await api.clearQueue();
    else if (action === "clear-history") { await api.clearHistory(); localStorage.removeItem(REFUSED_KEY); }
    else if (action === "compare") this.compare();
    else if (action === "load-history") {
      const entry = this.history[li.dataset.promptId];
      const workflow = entry?.prompt?.[3]?.extra_pnginfo?.workflow;
      const name = entry?.prompt?.[3]?.vidgraph_name ?? `history ${li.dataset.promptId.slice(0, 8)}`;
      this.app.loadAny(workflow ?? entry?.prompt?.[2], name, { outputs: entry?.outputs });
    } else if (action === "load-refused") {
      const run = readRefused().find((r) => r.id === li.dataset.refusedId);
      if (run && this.app.loadAny(run.workflow, run.name ?? "not queued")) this.app.execution.showValidationErrors(run.body);
    }
    this.refresh();
  }

  // Pending jobs move by drag and drop; the drop position is sent as the job's new place.
  installDragging() {
    const list = this.root.querySelector("#queue-pending");
    let dragged = null;
    list.addEventListener("dragstart", (e) => {
      dragged = e.target.closest("li[data-prompt-id]");
      if (!dragged) return;
      e.dataTransfer.setData("text/plain", dragged.dataset.promptId);
      e.dataTransfer.effectAllowed = "move";
      dragged.classList.add("dragging");
    });
    list.addEventListener("dragover", (e) => {
      if (!dragged) return;
      e.preventDefault();
      const over = e.target.closest("li[data-prompt-id]");
      for (const li of list.children) li.classList.toggle("drop-target", li === over && li !== dragged);
    });
    list.addEventListener("dragend", () => {
      dragged?.classList.remove("dragging");
      for (const li of list.children) li.classList.remove("drop-target");
      dragged = null;
    });
    list.addEventListener("drop", async (e) => {
      const over = e.target.closest("li[data-prompt-id]");
      if (!dragged || !over || over === dragged) return;
      e.preventDefault();
      e.stopPropagation();
      const promptId = dragged.dataset.promptId;
      const position = Number(over.dataset.position);
      const answer = await this.app.api.movePending(promptId, position);
      if (!answer.ok) this.app.toast(answer.data?.error?.message ?? "Could not move the job", "warning");
      this.refresh();
    });
  }
}
