// How far the running prompt is: nodes done out of nodes to run, the running node's steps, and a
// time-left guess from the steps' pace. RunProgress is plain data (no DOM); ProgressBar draws it.
import { element } from "./widgets.js";

export class RunProgress {
  constructor({ total = null, now = () => performance.now() } = {}) {
    this.total = total; // nodes in the prompt; null when unknown (queued elsewhere)
    this.cached = 0;
    this.done = 0;
    this.node = null; // {id, label, value, max, firstAt, firstValue, lastAt}
    this.now = now;
  }

  onCached(count) { this.cached += count; }

  onNode(id, label) {
    if (this.node) this.done++;
    this.node = id == null ? null : { id, label, value: 0, max: 0, firstAt: null, firstValue: 0, lastAt: null };
  }

  onStep(value, max) {
    if (!this.node) return;
    const t = this.now();
    if (this.node.firstAt === null || value < this.node.value) { this.node.firstAt = t; this.node.firstValue = value; }
    Object.assign(this.node, { value, max, lastAt: t });
  }

  // 0..1 over the whole prompt when its size is known, else the running node's own fraction.
  get fraction() {
    const step = this.node?.max ? this.node.value / this.node.max : 0;
    if (this.total == null) return step;
    const toRun = Math.max(1, this.total - this.cached);
    return Math.min(1, (this.done + step) / toRun);
  }

  // Seconds left in the running node, from the pace of its steps so far (null until two steps).
  get secondsLeft() {
    const n = this.node;
    if (!n?.max || n.firstAt === null || n.value <= n.firstValue) return null;
    const perStep = (n.lastAt - n.firstAt) / (n.value - n.firstValue) / 1000;
    return Math.max(0, perStep * (n.max - n.value));
  }

  describe() {
    const n = this.node;
    if (!n) return "running";
    const parts = [n.label];
    if (n.max) parts.push(`step ${n.value}/${n.max}`);
    const left = this.secondsLeft;
    if (left != null) parts.push(`about ${formatSeconds(left)} left`);
    if (this.total != null) parts.push(`${Math.round(this.fraction * 100)}% of the workflow`);
    return parts.join(" · ");
  }
}

export function formatSeconds(s) {
  if (s < 1) return "<1 s";
  if (s < 90) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

// The strip across the top of the canvas, and the percentage in the browser tab's title.
export class ProgressBar {
  constructor(canvas) {
    this.root = element("div", "run-progress");
    this.root.id = "run-progress";
    this.root.hidden = true;
    this.root.setAttribute("role", "progressbar");
    this.root.setAttribute("aria-valuemin", "0");
    this.root.setAttribute("aria-valuemax", "100");
    this.fill = element("div", "fill");
    this.label = element("div", "label");
    this.root.append(this.fill, this.label);
    canvas.append(this.root);
    this.baseTitle = null;
  }

  show(progress, title) {
    const pct = Math.round(progress.fraction * 100);
    this.root.hidden = false;
    this.root.style.setProperty("--fraction", String(progress.fraction));
    this.root.setAttribute("aria-valuenow", String(pct));
    this.label.textContent = progress.describe();
    this.baseTitle = title;
    document.title = `[${pct}%] ${title}`;
  }

  hide(title) {
    this.root.hidden = true;
    document.title = title;
  }
}
