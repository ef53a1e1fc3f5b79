// Client for vidgraph's ComfyUI-compatible HTTP and websocket API.
// Events are re-dispatched as DOM events named after the websocket message type
// (detail = its data); binary previews arrive as "b_preview".
import { parseBinaryFrame } from "./protocol.js";

const REPLACED = 4001; // close code: a newer socket took over this clientId (server/ws.py)

export class Api extends EventTarget {
  constructor(base = "") {
    super();
    this.base = base;
    this.clientId = sessionStorage.getItem("vidgraph.clientId") || randomHex();
    sessionStorage.setItem("vidgraph.clientId", this.clientId);
    this.socket = null;
    this.retryDelay = 500;
  }

  url(route) {
    return `${this.base}/api${route}`;
  }

  async request(route, { method = "GET", json, body } = {}) {
    const init = { method, headers: {} };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    const response = await fetch(this.url(route), init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
    return { ok: response.ok, status: response.status, data };
  }

  async json(route) {
    const r = await this.request(route);
    if (!r.ok) throw new Error(`${route}: HTTP ${r.status}`);
    return r.data;
  }

  getObjectInfo() { return this.json("/object_info"); }
  getQueue() { return this.json("/queue"); }
  getHistory(maxItems = 50) { return this.json(`/history?max_items=${maxItems}`); }
  getExtensions() { return this.json("/extensions"); }
  getWorkflowList() { return this.json("/vidgraph/workflows"); }
  getWorkflow(name) { return this.json(`/vidgraph/workflows/${name.split("/").map(encodeURIComponent).join("/")}`); }

  // name: the workflow's tab name, kept in the job's extra_data for the history list.
  queuePrompt(prompt, workflow, { front = false, name = null } = {}) {
    const extra = { extra_pnginfo: { workflow }, ...(name ? { vidgraph_name: name } : {}) };
    return this.request("/prompt", {
      method: "POST",
      json: { prompt, client_id: this.clientId, extra_data: extra, ...(front ? { front: true } : {}) },
    });
  }

  // The queue controls (pause, reorder, cancel by id): docs/ARCHITECTURE.md, issue 14.
  getQueueState() { return this.json("/vidgraph/queue"); }
  setPaused(paused) { return this.request(`/vidgraph/queue/${paused ? "pause" : "resume"}`, { method: "POST" }); }
  movePending(promptId, position) { return this.request("/vidgraph/queue/move", { method: "POST", json: { prompt_id: promptId, position } }); }
  cancelJob(promptId) { return this.request(`/vidgraph/jobs/${encodeURIComponent(promptId)}/cancel`, { method: "POST" }); }

  interrupt() { return this.request("/interrupt", { method: "POST", json: {} }); }
  deleteQueued(promptId) { return this.request("/queue", { method: "POST", json: { delete: [promptId] } }); }
  clearQueue() { return this.request("/queue", { method: "POST", json: { clear: true } }); }
  clearHistory() { return this.request("/history", { method: "POST", json: { clear: true } }); }

  async uploadImage(file, { subfolder = "", type = "input" } = {}) {
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("type", type);
    form.append("subfolder", subfolder);
    const r = await this.request("/upload/image", { method: "POST", body: form });
    if (!r.ok) throw new Error(r.data?.error?.message || r.data?.error || `upload failed: HTTP ${r.status}`);
    return r.data;
  }

  viewUrl({ filename, subfolder = "", type = "output" }) {
    const q = new URLSearchParams({ filename, subfolder, type });
    return this.url(`/view?${q}`);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${this.base}/ws?clientId=${this.clientId}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retryDelay = 500;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.dispatchEvent(new CustomEvent("connected"));
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        const frame = parseBinaryFrame(event.data);
        if (frame?.kind === "preview") this.dispatchEvent(new CustomEvent("b_preview", { detail: frame }));
        return;
      }
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.type === "status" && message.data?.sid) {
        this.clientId = message.data.sid;
        sessionStorage.setItem("vidgraph.clientId", this.clientId);
      }
      this.dispatchEvent(new CustomEvent(message.type, { detail: message.data }));
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      if (event.code === REPLACED) {
        // Another tab connected with our id (a duplicated tab copies sessionStorage): take a
        // new one rather than closing its socket in turn, forever.
        this.clientId = randomHex();
        sessionStorage.setItem("vidgraph.clientId", this.clientId);
        this.connect();
        return;
      }
      this.dispatchEvent(new CustomEvent("disconnected"));
      setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 10000);
    });
  }
}

function randomHex() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
