// A large player for results: play/pause, frame by frame, a scrubber with the frame number,
// download and open; with two sources, the same frame of both side by side (seed A vs seed B).
import { element } from "./widgets.js";
import { readFrameTiming } from "./metadata.js";

const VIDEO = /\.(mp4|webm|mov|mkv)$/i;
const ANIMATED = /\.(webp|png|gif|apng)$/i;

// One side of the player: frames of one output (an animation, a video, or a batch of stills).
class Pane {
  constructor({ files, label, urlOf }) {
    this.files = files;
    this.label = label;
    this.urlOf = urlOf;
    this.frames = 1;
    this.fps = null;
    this.root = element("figure", "player-pane");
    this.stage = element("div", "player-stage");
    this.caption = element("figcaption", "player-caption");
    this.root.append(this.stage, this.caption);
  }

  async load() {
    const first = this.files[0];
    const url = this.urlOf(first);
    if (this.files.length > 1) return this.loadStills();
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    const timing = readFrameTiming(bytes) ?? { frames: 1, fps: null };
    this.frames = timing.frames;
    this.fps = timing.fps;
    if (VIDEO.test(first.filename)) {
      this.video = Object.assign(document.createElement("video"), { src: url, muted: true, playsInline: true, preload: "auto" });
      this.stage.append(this.video);
      await new Promise((resolve) => {
        if (this.video.readyState >= 1) resolve();
        this.video.addEventListener("loadedmetadata", resolve, { once: true });
        this.video.addEventListener("error", resolve, { once: true });
      });
      if (!this.fps && this.video.duration) this.fps = this.frames / this.video.duration;
    } else if (ANIMATED.test(first.filename) && this.frames > 1 && "ImageDecoder" in window) {
      // Exact frames of an animated image, decoded once: scrubbing is then only drawing.
      const decoder = new ImageDecoder({ data: bytes, type: first.filename.endsWith(".webp") ? "image/webp" : "image/png" });
      await decoder.tracks.ready;
      this.frames = decoder.tracks.selectedTrack.frameCount;
      this.bitmaps = [];
      for (let i = 0; i < this.frames; i++) {
        const { image } = await decoder.decode({ frameIndex: i });
        this.bitmaps.push(await createImageBitmap(image));
        image.close();
      }
      decoder.close();
      this.canvas = element("canvas", "player-canvas");
      [this.canvas.width, this.canvas.height] = [this.bitmaps[0].width, this.bitmaps[0].height];
      this.stage.append(this.canvas);
    } else {
      this.frames = 1; // a still, or an animation this browser cannot step through: shown as it is
      this.stage.append(Object.assign(document.createElement("img"), { src: url, alt: first.filename }));
    }
    this.caption.append(element("span", "player-label", this.label ?? first.filename), this.links(first, url));
  }

  // A batch of still images: each is a frame.
  async loadStills() {
    this.frames = this.files.length;
    this.images = this.files.map((file) => Object.assign(document.createElement("img"), { src: this.urlOf(file), alt: file.filename }));
    await Promise.all(this.images.map((img) => img.decode().catch(() => null)));
    this.stage.append(this.images[0]);
    this.caption.append(element("span", "player-label", this.label ?? `${this.files.length} images`), this.links(this.files[0], this.urlOf(this.files[0])));
  }

  links(file, url) {
    const box = element("span", "player-links");
    const download = Object.assign(element("a", "player-download", "Download"), { href: url, download: file.filename });
    const open = Object.assign(element("a", "player-open", "Open"), { href: url, target: "_blank", rel: "noopener" });
    box.append(download, open);
    return box;
  }

  show(frame) {
    const i = Math.min(frame, this.frames - 1);
    if (this.bitmaps) this.canvas.getContext("2d").drawImage(this.bitmaps[i], 0, 0);
    else if (this.video && this.fps) this.video.currentTime = (i + 0.5) / this.fps; // the middle of the frame
    else if (this.images) this.stage.replaceChildren(this.images[i]);
    this.root.dataset.frame = String(i);
  }
}

export class Player {
  constructor() {
    this.root = null;
  }

  get isOpen() { return Boolean(this.root); }

  // sources: [{files, label}], one or two; urlOf(file) gives a /view URL.
  async open(sources, { title = "Result", urlOf }) {
    this.close();
    this.panes = sources.map((s) => new Pane({ ...s, urlOf }));
    this.root = element("div", "player");
    this.root.id = "player";
    this.root.setAttribute("role", "dialog");
    this.root.setAttribute("aria-label", title);
    this.root.tabIndex = -1;
    const head = element("div", "player-head");
    const close = element("button", "player-close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Close the player");
    close.addEventListener("click", () => this.close());
    head.append(element("h2", "player-title", title), close);
    const panes = element("div", `player-panes count-${this.panes.length}`);
    panes.append(...this.panes.map((p) => p.root));
    this.controls = this.buildControls();
    this.root.append(head, panes, this.controls);
    this.root.addEventListener("keydown", (e) => this.onKey(e));
    this.root.addEventListener("click", (e) => { if (e.target === this.root) this.close(); });
    document.body.append(this.root);
    this.root.focus();
    await Promise.all(this.panes.map((p) => p.load().catch((err) => p.caption.append(element("span", "player-error", err.message)))));
    if (!this.root) return;
    this.frames = Math.max(...this.panes.map((p) => p.frames));
    this.fps = this.panes.find((p) => p.fps)?.fps ?? 8;
    this.scrubber.max = String(this.frames - 1);
    this.root.dataset.frames = String(this.frames);
    this.root.dataset.ready = "true";
    this.seek(0);
  }

  buildControls() {
    const bar = element("div", "player-controls");
    const button = (label, title, action, cls) => {
      const b = element("button", cls ?? "", label);
      b.type = "button";
      b.title = title;
      b.setAttribute("aria-label", title);
      b.addEventListener("click", action);
      bar.append(b);
      return b;
    };
    button("|◀", "First frame (Home)", () => this.seek(0), "first");
    button("◀ Prev", "Previous frame (←)", () => this.step(-1), "prev");
    this.playButton = button("▶ Play", "Play / pause (Space)", () => this.toggle(), "play");
    button("Next ▶", "Next frame (→)", () => this.step(1), "next");
    button("▶|", "Last frame (End)", () => this.seek(this.frames - 1), "last");
    this.scrubber = Object.assign(document.createElement("input"), { type: "range", min: "0", max: "0", step: "1", value: "0", className: "scrubber" });
    this.scrubber.setAttribute("aria-label", "Frame");
    this.scrubber.addEventListener("input", () => { this.pause(); this.seek(Number(this.scrubber.value)); });
    this.counter = element("span", "frame-counter", "frame – / –");
    bar.append(this.scrubber, this.counter);
    return bar;
  }

  seek(frame) {
    if (!this.frames) return;
    this.frame = ((frame % this.frames) + this.frames) % this.frames;
    for (const pane of this.panes) pane.show(this.frame);
    this.scrubber.value = String(this.frame);
    this.counter.textContent = `frame ${this.frame + 1} / ${this.frames}${this.fps ? ` · ${Math.round(this.fps * 100) / 100} fps` : ""}`;
    this.root.dataset.frame = String(this.frame);
  }

  step(delta) { this.pause(); this.seek(this.frame + delta); }

  toggle() { if (this.timer) this.pause(); else this.play(); }

  play() {
    if (!this.frames || this.frames < 2) return;
    this.timer = setInterval(() => this.seek(this.frame + 1), 1000 / this.fps);
    this.playButton.textContent = "Pause";
    this.root.dataset.playing = "true";
  }

  pause() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.playButton) this.playButton.textContent = "▶ Play";
    if (this.root) delete this.root.dataset.playing;
  }

  onKey(e) {
    const keys = { " ": () => this.toggle(), ArrowLeft: () => this.step(-1), ArrowRight: () => this.step(1),
      Home: () => this.seek(0), End: () => this.seek(this.frames - 1), Escape: () => this.close() };
    if (!keys[e.key] || e.target === this.scrubber && e.key.startsWith("Arrow")) { e.stopPropagation(); return; }
    e.preventDefault();
    e.stopPropagation(); // the editor's own shortcuts (arrows move nodes) stay out of it
    keys[e.key]();
  }

  close() {
    this.pause();
    this.root?.remove();
    this.root = null;
  }
}
