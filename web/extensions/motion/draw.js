// Motion drawing layer (issue 12): paint motion-brush masks, drag boxes and draw their paths, and
// preview camera paths, on the start image, over the editor's extension hooks only.
//
// Everything drawn is stored as the nodes' ordinary widget values (MaskFromShapes.shapes,
// TrajectoriesFromJSON.tracks, CameraPath's own widgets), so `vidgraph run` and the API reproduce it.
// The camera preview mirrors nodes/motion/camera.py (poses, easing, keyframes); the presets come
// from the node definition itself.
const app = window.vidgraph;

const EDITORS = {
  MaskFromShapes: { mode: "mask", widget: "shapes", label: "✎ paint the mask" },
  TrajectoriesFromJSON: { mode: "tracks", widget: "tracks", label: "✎ draw boxes and paths" },
  CameraPath: { mode: "camera", label: "▶ preview the camera path" },
};
const COLOURS = ["#ff4040", "#40c8ff", "#ffd200", "#78ff78", "#e678ff", "#ff963c"];
const MAX_VIEW = [960, 540];

function widget(node, name) { return node.widgets.find((w) => w.name === name); }

function parse(text, fallback) {
  try { const v = JSON.parse(text); return Array.isArray(v) ? v : fallback; } catch { return fallback; }
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// The start image: a LoadImage node of the graph (the one titled as the start/init image first).
function imageSources() {
  const loaders = [...app.graph.nodes.values()].filter((n) => n.type === "LoadImage");
  loaders.sort((a, b) => Number(!/init|start/i.test(a.title ?? "")) - Number(!/init|start/i.test(b.title ?? "")));
  return loaders.map((n) => ({ id: n.id, name: String(widget(n, "image")?.value ?? "") })).filter((s) => s.name);
}

function viewUrl(name) {
  const slash = name.lastIndexOf("/");
  const q = new URLSearchParams({ filename: name.slice(slash + 1), subfolder: slash < 0 ? "" : name.slice(0, slash), type: "input" });
  return `/view?${q}`;
}

function loadImage(url) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

// ---- camera poses (mirrors nodes/motion/camera.py) --------------------------------------------
const IDENTITY = { pan_x: 0, pan_y: 0, zoom: 1, roll: 0 };

export function ease(t, easing) {
  if (easing === "ease_in") return t * t;
  if (easing === "ease_out") return 1 - (1 - t) * (1 - t);
  if (easing === "ease_in_out") return t * t * (3 - 2 * t);
  return t;
}

function interpolate(a, b, t) {
  return { pan_x: a.pan_x + (b.pan_x - a.pan_x) * t, pan_y: a.pan_y + (b.pan_y - a.pan_y) * t,
    zoom: Math.exp(Math.log(a.zoom) + (Math.log(b.zoom) - Math.log(a.zoom)) * t), roll: a.roll + (b.roll - a.roll) * t };
}

export function cameraPoses(values, presets) {
  const frames = Math.max(1, Number(values.frames) || 1);
  const easing = values.easing ?? "linear";
  const towards = (end) => Array.from({ length: frames }, (_, i) => (frames === 1 ? IDENTITY : interpolate(IDENTITY, end, ease(i / (frames - 1), easing))));
  if (values.preset !== "custom") {
    const p = presets?.[values.preset] ?? {};
    const k = Number(values.intensity ?? 1);
    return towards({ pan_x: (p.pan_x ?? 0) * k, pan_y: (p.pan_y ?? 0) * k, zoom: (p.zoom ?? 1) ** k, roll: (p.roll ?? 0) * k });
  }
  const keys = String(values.keyframes ?? "").trim() ? parse(values.keyframes, null) : null;
  if (!keys) return towards({ pan_x: Number(values.pan_x ?? 0), pan_y: Number(values.pan_y ?? 0), zoom: Number(values.zoom ?? 1), roll: Number(values.roll ?? 0) });
  let pose = IDENTITY;
  const stops = keys.map((k) => { pose = { ...pose, ...Object.fromEntries(Object.keys(IDENTITY).filter((n) => n in k).map((n) => [n, Number(k[n])])) }; return [k.frame, pose]; })
    .sort((a, b) => a[0] - b[0]);
  return Array.from({ length: frames }, (_, i) => {
    if (i <= stops[0][0]) return stops[0][1];
    if (i >= stops[stops.length - 1][0]) return stops[stops.length - 1][1];
    for (let s = 0; s < stops.length - 1; s++) {
      const [fa, a] = stops[s];
      const [fb, b] = stops[s + 1];
      if (fa <= i && i <= fb) return interpolate(a, b, ease((i - fa) / (fb - fa), easing));
    }
    return stops[stops.length - 1][1];
  });
}

// Draws the image as seen through `pose`: output pixel u shows source c + pan + R(roll)(u - c)/zoom.
function drawPose(ctx, img, pose, w, h) {
  ctx.save();
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, w, h);
  ctx.translate(w / 2, h / 2);
  ctx.scale(pose.zoom, pose.zoom);
  ctx.rotate((-pose.roll * Math.PI) / 180);
  ctx.translate(-w / 2 - pose.pan_x * w, -h / 2 - pose.pan_y * h);
  if (img) ctx.drawImage(img, 0, 0, w, h);
  ctx.restore();
}

// ---- the drawing dialog -----------------------------------------------------------------------
class Drawer {
  constructor(node, spec) {
    this.node = node;
    this.spec = spec;
    this.mode = spec.mode;
    this.size = [Number(widget(node, "width")?.value ?? 1024), Number(widget(node, "height")?.value ?? 576)];
    this.items = this.mode === "camera" ? [] : parse(widget(node, spec.widget)?.value ?? "[]", []);
    this.tool = this.mode === "mask" ? "rect" : "box";
    this.radius = 24;
    this.erase = false;
    this.draft = null;
    this.build();
  }

  build() {
    const root = el("div", { class: "motion-draw", role: "dialog", "data-mode": this.mode });
    root.style.cssText = "position:fixed;inset:0;z-index:1000;background:rgba(0,0,0,.75);display:flex;flex-direction:column;align-items:center;justify-content:center;gap:8px;color:#eee;font:13px sans-serif";
    const bar = el("div", { class: "motion-draw-tools" });
    bar.style.cssText = "display:flex;gap:6px;align-items:center;flex-wrap:wrap";
    this.source = el("select", { class: "motion-draw-source", title: "start image" });
    this.source.style.cssText = "color:#111;background:#eee";
    for (const s of imageSources()) this.source.append(el("option", { value: s.name }, `#${s.id} ${s.name}`));
    this.source.addEventListener("change", () => this.loadBackground());
    bar.append(this.source);
    const button = (label, value, onClick) => {
      const b = el("button", { type: "button", "data-action": value }, label);
      b.addEventListener("click", onClick);
      bar.append(b);
      return b;
    };
    if (this.mode === "mask") {
      for (const t of ["rect", "ellipse", "stroke"]) button(t === "stroke" ? "brush" : t, `tool-${t}`, () => { this.tool = t; });
      const erase = el("label", {}, " erase ");
      const box = el("input", { type: "checkbox", "data-action": "erase" });
      box.addEventListener("change", () => { this.erase = box.checked; });
      erase.prepend(box);
      const radius = el("input", { type: "range", min: "2", max: "128", value: String(this.radius), "data-action": "radius", title: "brush radius" });
      radius.addEventListener("input", () => { this.radius = Number(radius.value); });
      bar.append(erase, radius);
    }
    if (this.mode === "tracks") bar.append(el("span", {}, "drag a box, then click its path; drag again for another"));
    if (this.mode !== "camera") {
      button("undo", "undo", () => { this.undoLast(); this.paint(); });
      button("clear", "clear", () => { this.items = []; this.paint(); });
    } else {
      this.frameLabel = el("span", { class: "motion-draw-frame" });
      bar.append(this.frameLabel);
    }
    this.canvas = el("canvas", { class: "motion-draw-canvas" });
    const scale = Math.min(MAX_VIEW[0] / this.size[0], MAX_VIEW[1] / this.size[1]);
    this.scale = scale;
    this.canvas.width = Math.round(this.size[0] * scale);
    this.canvas.height = Math.round(this.size[1] * scale);
    this.canvas.style.cssText = "background:#222;cursor:crosshair;touch-action:none";
    const foot = el("div");
    foot.style.cssText = "display:flex;gap:8px";
    const save = el("button", { type: "button", "data-action": "save" }, this.mode === "camera" ? "close" : "save");
    const cancel = el("button", { type: "button", "data-action": "cancel" }, "cancel");
    save.addEventListener("click", () => this.close(this.mode !== "camera"));
    cancel.addEventListener("click", () => this.close(false));
    foot.append(save);
    if (this.mode !== "camera") foot.append(cancel);
    root.append(bar, this.canvas, foot);
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.close(false);
      if (e.key === "Backspace" && this.mode === "tracks") { this.undoLast(); this.paint(); }
      e.stopPropagation();
    });
    root.tabIndex = -1;
    this.root = root;
    if (this.mode !== "camera") this.listen();
  }

  async open() {
    document.body.append(this.root);
    this.root.focus();
    await this.loadBackground();
    if (this.mode === "camera") this.play();
    else this.paint();
  }

  async loadBackground() {
    const name = this.source.value;
    this.image = name ? await loadImage(viewUrl(name)) : null;
    this.root.dataset.loaded = this.image ? "image" : "none";
    if (this.mode !== "camera") this.paint();
  }

  toImage(e) {
    const r = this.canvas.getBoundingClientRect();
    return [Math.round((e.clientX - r.left) / this.scale), Math.round((e.clientY - r.top) / this.scale)];
  }

  listen() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      const [x, y] = this.toImage(e);
      if (this.mode === "mask" && this.tool === "stroke") this.draft = { type: "stroke", points: [[x, y]], radius: this.radius };
      else this.draft = { type: this.mode === "mask" ? this.tool : "box", x0: x, y0: y, x1: x, y1: y };
      if (this.erase && this.mode === "mask") this.draft.erase = true;
      this.paint();
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.draft) return;
      const [x, y] = this.toImage(e);
      if (this.draft.type === "stroke") this.draft.points.push([x, y]);
      else Object.assign(this.draft, { x1: x, y1: y });
      this.paint();
    });
    c.addEventListener("pointerup", () => {
      const d = this.draft;
      this.draft = null;
      if (!d) return;
      if (this.mode === "mask") {
        if (d.type === "stroke" || (Math.abs(d.x1 - d.x0) > 1 && Math.abs(d.y1 - d.y0) > 1)) this.items.push(d);
      } else if (Math.abs(d.x1 - d.x0) > 3 && Math.abs(d.y1 - d.y0) > 3) {
        const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];
        this.items.push({ box, path: [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]] });
      } else if (this.items.length) {
        this.items[this.items.length - 1].path.push([d.x0, d.y0]);   // a click: the current track's next point
      }
      this.paint();
    });
  }

  undoLast() {
    const last = this.items[this.items.length - 1];
    if (this.mode === "tracks" && last && last.path.length > 1) last.path.pop();
    else this.items.pop();
  }

  paint() {
    const ctx = this.canvas.getContext("2d");
    const s = this.scale;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.image) ctx.drawImage(this.image, 0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(s, 0, 0, s, 0, 0);
    const items = this.draft ? [...this.items, this.draft] : this.items;
    if (this.mode === "mask") {
      // The mask as the node will rasterise it: painted shapes, erased ones cut out.
      const layer = document.createElement("canvas");
      layer.width = this.canvas.width;
      layer.height = this.canvas.height;
      const m = layer.getContext("2d");
      m.setTransform(s, 0, 0, s, 0, 0);
      for (const shape of items) {
        m.globalCompositeOperation = shape.erase ? "destination-out" : "source-over";
        m.fillStyle = m.strokeStyle = "rgba(255, 64, 64, 1)";
        if (shape.type === "stroke") {
          m.lineWidth = 2 * shape.radius;
          m.lineCap = m.lineJoin = "round";
          m.beginPath();
          shape.points.forEach(([x, y], i) => (i ? m.lineTo(x, y) : m.moveTo(x, y)));
          if (shape.points.length === 1) m.lineTo(shape.points[0][0] + 0.01, shape.points[0][1]);
          m.stroke();
        } else if (shape.type === "ellipse") {
          m.beginPath();
          m.ellipse((shape.x0 + shape.x1) / 2, (shape.y0 + shape.y1) / 2, Math.abs(shape.x1 - shape.x0) / 2, Math.abs(shape.y1 - shape.y0) / 2, 0, 0, 2 * Math.PI);
          m.fill();
        } else {
          m.fillRect(Math.min(shape.x0, shape.x1), Math.min(shape.y0, shape.y1), Math.abs(shape.x1 - shape.x0), Math.abs(shape.y1 - shape.y0));
        }
      }
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.globalAlpha = 0.45;
      ctx.drawImage(layer, 0, 0);
      ctx.globalAlpha = 1;
      return;
    }
    ctx.lineWidth = 2 / s;
    items.forEach((t, i) => {
      ctx.strokeStyle = ctx.fillStyle = COLOURS[i % COLOURS.length];
      if (t.type === "box") { ctx.strokeRect(t.x0, t.y0, t.x1 - t.x0, t.y1 - t.y0); return; }
      const [x0, y0, x1, y1] = t.box;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.beginPath();
      t.path.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
      for (const [x, y] of t.path) { ctx.beginPath(); ctx.arc(x, y, 4 / s, 0, 2 * Math.PI); ctx.fill(); }
      // the box where the path ends: the planned last frame
      const [ex, ey] = t.path[t.path.length - 1];
      const [sx, sy] = t.path[0];
      ctx.setLineDash([6 / s, 4 / s]);
      ctx.strokeRect(x0 + ex - sx, y0 + ey - sy, x1 - x0, y1 - y0);
      ctx.setLineDash([]);
    });
  }

  play() {
    const values = Object.fromEntries(this.node.widgets.map((w) => [w.name, w.value]));
    const presets = widget(this.node, "preset")?.spec?.options?.presets ?? {};
    this.poses = cameraPoses(values, presets);
    this.root.dataset.frames = String(this.poses.length);
    let frame = 0;
    const ctx = this.canvas.getContext("2d");
    const step = () => {
      drawPose(ctx, this.image, this.poses[frame], this.canvas.width, this.canvas.height);
      this.frameLabel.textContent = `frame ${frame + 1} / ${this.poses.length}`;
      frame = (frame + 1) % this.poses.length;
    };
    step();
    this.timer = setInterval(step, 1000 / 6);
  }

  close(save) {
    clearInterval(this.timer);
    if (save) {
      const w = widget(this.node, this.spec.widget);
      w.value = JSON.stringify(this.items);
      const control = app.view.nodeEl(this.node.id)?.querySelector(`[data-widget="${this.spec.widget}"] textarea, [data-widget="${this.spec.widget}"] input`);
      if (control) control.value = w.value;
      app.commit();
    }
    this.root.remove();
  }
}

app.registerExtension({
  name: "vidgraph.motion.draw",
  nodeRendered(node, element) {
    const spec = EDITORS[node.type];
    if (!spec || element.querySelector(".motion-draw-open")) return;
    const button = el("button", { type: "button", class: "motion-draw-open" }, spec.label);
    button.style.cssText = "margin:4px 8px;width:calc(100% - 16px)";
    button.addEventListener("pointerdown", (e) => e.stopPropagation());   // not a node drag
    button.addEventListener("click", (e) => { e.stopPropagation(); new Drawer(node, spec).open(); });
    (element.querySelector(".widgets") ?? element).append(button);
  },
});
