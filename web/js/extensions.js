// Plugin web extensions: every URL from GET /extensions is imported as an ES module.
// A module registers itself with window.vidgraph.registerExtension({...}) (or imports
// `app` from "/scripts/app.js"); see web/README.md for the hooks.
export class Extensions {
  constructor(app) {
    this.app = app;
    this.registered = [];
    this.failed = [];
  }

  register(extension) {
    if (!extension || typeof extension.name !== "string") throw new Error("an extension needs a name");
    if (this.registered.some((e) => e.name === extension.name)) throw new Error(`extension ${extension.name} is already registered`);
    this.registered.push(extension);
  }

  async loadAll(urls) {
    for (const url of urls) {
      try {
        await import(url);
      } catch (err) {
        this.failed.push({ url, error: String(err) });
        console.error(`extension ${url} failed to load`, err);
      }
    }
  }

  // Runs a hook on every extension; one extension failing never stops the others.
  async call(hook, ...args) {
    for (const extension of this.registered) {
      if (typeof extension[hook] !== "function") continue;
      try {
        await extension[hook](...args, this.app);
      } catch (err) {
        console.error(`extension ${extension.name}.${hook} failed`, err);
      }
    }
  }

  // Synchronous variant for hooks on hot paths (node rendering).
  callSync(hook, ...args) {
    for (const extension of this.registered) {
      if (typeof extension[hook] !== "function") continue;
      try { extension[hook](...args, this.app); } catch (err) { console.error(`extension ${extension.name}.${hook} failed`, err); }
    }
  }
}
