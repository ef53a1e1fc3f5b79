// Undo/redo over whole-graph snapshots. The app records one snapshot per finished
// user action, so a paste of ten nodes or a multi-node move is a single step.
export class UndoStack {
  constructor(limit = 100) {
    this.limit = limit;
    this.past = [];
    this.future = [];
    this.current = null;
  }

  reset(state) {
    this.current = state;
    this.past = [];
    this.future = [];
  }

  // Returns true when the state differs from the last one (i.e. a step was added).
  record(state) {
    if (state === this.current) return false;
    if (this.current !== null) this.past.push(this.current);
    if (this.past.length > this.limit) this.past.shift();
    this.current = state;
    this.future = [];
    return true;
  }

  undo() {
    if (!this.past.length) return null;
    this.future.push(this.current);
    this.current = this.past.pop();
    return this.current;
  }

  redo() {
    if (!this.future.length) return null;
    this.past.push(this.current);
    this.current = this.future.pop();
    return this.current;
  }

  get canUndo() { return this.past.length > 0; }
  get canRedo() { return this.future.length > 0; }
}
