// Pointer gestures on the canvas: pan, wheel zoom, node drag, box select, link drag,
// group move/resize. Everything goes through Pointer Events with pointer capture.
import { typesCompatible } from "./types.js";

const FORM_CONTROLS = "input, select, textarea, button, option, [contenteditable=true]";

export function installGestures(view, hooks) {
  const { canvas, graph } = view;
  let gesture = null;

  const slotUnder = (clientX, clientY) => {
    const el = document.elementFromPoint(clientX, clientY);
    return { el, slot: el?.closest(".slot"), nodeEl: el?.closest(".node") };
  };

  canvas.addEventListener("pointerdown", (e) => {
    if (e.button === 2) return;
    const target = e.target;
    const dot = target.closest(".slot:not(.widget-slot), .widget-slot > .dot");
    const nodeEl = target.closest(".node");
    if (e.button === 1) { gesture = startPan(e); }
    else if (dot && nodeEl) { gesture = startLinkDrag(e, nodeEl, dot.closest(".slot")); }
    else if (target.closest(FORM_CONTROLS)) { return; }
    else if (target.closest(".node-resize")) { gesture = startNodeResize(e, Number(nodeEl.dataset.nodeId)); }
    else if (target.closest(".group-resize")) { gesture = startGroupResize(e, target.closest(".group")); }
    else if (target.closest(".group-title")) { gesture = startGroupMove(e, target.closest(".group")); }
    else if (nodeEl) { gesture = startNodeDrag(e, Number(nodeEl.dataset.nodeId)); }
    else if (e.ctrlKey || e.shiftKey || e.metaKey) { gesture = startBoxSelect(e); }
    else {
      view.setSelection([]);
      gesture = startPan(e);
    }
    if (gesture) {
      canvas.setPointerCapture(e.pointerId);
      e.preventDefault();
      if (document.activeElement?.closest?.(".node")) document.activeElement.blur();
      canvas.focus({ preventScroll: true });
    }
  });

  canvas.addEventListener("pointermove", (e) => gesture?.move(e));
  const finish = (e) => {
    if (!gesture) return;
    const current = gesture;
    gesture = null;
    current.end(e);
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  canvas.addEventListener("wheel", (e) => {
    const area = e.target.closest("textarea");
    if (area && area.scrollHeight > area.clientHeight && !e.ctrlKey) return;
    e.preventDefault();
    view.zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * 0.0015));
    hooks.viewChanged();
  }, { passive: false });

  canvas.addEventListener("dblclick", (e) => {
    // Pointer capture retargets the click events to the canvas: look at what is really there.
    const target = document.elementFromPoint(e.clientX, e.clientY) ?? e.target;
    const title = target.closest(".title-text");
    if (title) { hooks.rename(Number(title.closest(".node").dataset.nodeId), title); return; }
    const groupTitle = target.closest(".group-title");
    if (groupTitle) { hooks.renameGroup(Number(groupTitle.closest(".group").dataset.groupId), groupTitle); return; }
    const preview = target.closest(".node-preview img, .node-preview video");
    if (preview) { hooks.openPreview(Number(preview.closest(".node").dataset.nodeId)); return; }
    if (target.closest(".node") || target.closest(FORM_CONTROLS)) return;
    hooks.openSearch({ clientX: e.clientX, clientY: e.clientY });
  });

  canvas.addEventListener("click", (e) => {
    const collapse = e.target.closest(".collapse");
    if (collapse) hooks.toggleCollapse([Number(collapse.closest(".node").dataset.nodeId)]);
  });

  // ---- the gestures ---------------------------------------------------------
  function startPan(e) {
    let last = [e.clientX, e.clientY];
    canvas.classList.add("panning");
    return {
      move(ev) {
        view.panBy(ev.clientX - last[0], ev.clientY - last[1]);
        last = [ev.clientX, ev.clientY];
      },
      end() { canvas.classList.remove("panning"); hooks.viewChanged(); },
    };
  }

  function startNodeDrag(e, nodeId) {
    const additive = e.ctrlKey || e.shiftKey || e.metaKey;
    if (additive) {
      const next = new Set(view.selected);
      if (next.has(nodeId)) next.delete(nodeId); else next.add(nodeId);
      view.setSelection(next);
    } else if (!view.selected.has(nodeId)) {
      view.setSelection([nodeId]);
    }
    const moving = [...view.selected].map((id) => graph.nodes.get(id)).filter((n) => n && !n.flags.pinned);
    const start = [e.clientX, e.clientY];
    const origins = moving.map((n) => [...n.pos]);
    let moved = false;
    return {
      move(ev) {
        const dx = (ev.clientX - start[0]) / view.scale;
        const dy = (ev.clientY - start[1]) / view.scale;
        if (!moved && Math.hypot(dx, dy) < 2) return;
        moved = true;
        moving.forEach((n, i) => {
          n.pos = [Math.round(origins[i][0] + dx), Math.round(origins[i][1] + dy)];
          view.positionNode(n);
        });
        view.updateLinks(moving.map((n) => n.id));
      },
      end() { if (moved) hooks.commit(); },
    };
  }

  function startBoxSelect(e) {
    const box = canvas.querySelector("#selection-box");
    const rect = canvas.getBoundingClientRect();
    const start = [e.clientX, e.clientY];
    const base = new Set(view.selected);
    const place = (ev) => {
      const x = Math.min(start[0], ev.clientX) - rect.left;
      const y = Math.min(start[1], ev.clientY) - rect.top;
      Object.assign(box.style, { left: `${x}px`, top: `${y}px`, width: `${Math.abs(ev.clientX - start[0])}px`, height: `${Math.abs(ev.clientY - start[1])}px` });
    };
    box.hidden = false;
    place(e);
    return {
      move: place,
      end(ev) {
        box.hidden = true;
        const [ax, ay] = view.clientToWorld(Math.min(start[0], ev.clientX), Math.min(start[1], ev.clientY));
        const [bx, by] = view.clientToWorld(Math.max(start[0], ev.clientX), Math.max(start[1], ev.clientY));
        const hit = [...graph.nodes.values()].filter((n) =>
          n.pos[0] < bx && n.pos[0] + n.size[0] > ax && n.pos[1] < by && n.pos[1] + view.nodeHeight(n) > ay).map((n) => n.id);
        view.setSelection([...base, ...hit]);
      },
    };
  }

  function startLinkDrag(e, nodeEl, slot) {
    const nodeId = Number(nodeEl.dataset.nodeId);
    let from; // {nodeId, slot} of an output when dragging forward
    let into = null; // {nodeId, name} of an input when dragging backward
    let type;
    if (slot.classList.contains("output")) {
      from = { nodeId, slot: Number(slot.dataset.output) };
      type = graph.outputType(graph.nodes.get(nodeId), from.slot);
    } else {
      const existing = graph.linkToInput(nodeId, slot.dataset.input);
      if (existing) {
        // Dragging a connected input picks its link up from the output end.
        graph.removeLink(existing.id);
        from = { nodeId: existing.origin_id, slot: existing.origin_slot };
        type = existing.type;
        view.renderNode(graph.nodes.get(nodeId));
        view.renderNode(graph.nodes.get(existing.origin_id));
      } else {
        into = { nodeId, name: slot.dataset.input };
        type = slot.dataset.slotType;
      }
    }
    const anchor = from ? view.slotPosition(from.nodeId, "out", from.slot) : view.slotPosition(into.nodeId, "in", into.name);
    canvas.classList.add("linking");
    markCompatible(from ? "input" : "output", type);
    const draw = (ev) => view.drawPendingLink(anchor, view.clientToWorld(ev.clientX, ev.clientY), type, Boolean(into));
    draw(e);
    return {
      move: draw,
      end(ev) {
        view.clearPendingLink();
        canvas.classList.remove("linking");
        clearCompatible();
        const under = slotUnder(ev.clientX, ev.clientY);
        const targetId = under.nodeEl ? Number(under.nodeEl.dataset.nodeId) : null;
        let made = null;
        if (from && targetId != null) {
          const name = under.slot?.dataset.input ?? firstCompatibleInput(graph.nodes.get(targetId), type);
          if (name !== undefined) made = connectAndRender(from.nodeId, from.slot, targetId, name);
        } else if (into && targetId != null) {
          const out = under.slot?.dataset.output ?? firstCompatibleOutput(graph.nodes.get(targetId), type);
          if (out !== undefined) made = connectAndRender(targetId, Number(out), into.nodeId, into.name);
        } else if (!under.el?.closest("#toolbar, #queue-panel")) {
          hooks.openSearch({ clientX: ev.clientX, clientY: ev.clientY, pending: { from, into, type } });
          return;
        }
        if (!made && targetId != null) {
          hooks.refused?.(type);
        }
        view.updateLinks();
        hooks.commit();
      },
    };
  }

  // Re-renders both ends, and the output that lost its link when this one replaced it.
  function connectAndRender(originId, slot, targetId, name) {
    const replaced = graph.linkToInput(targetId, name);
    const made = graph.connect(originId, slot, targetId, name);
    if (!made) return null;
    const touched = new Set([originId, targetId, replaced?.origin_id].filter((id) => id != null));
    for (const id of touched) view.renderNode(graph.nodes.get(id));
    return made;
  }

  function markCompatible(side, type) {
    for (const slot of canvas.querySelectorAll(`.slot.${side}`)) {
      slot.classList.toggle("compatible", typesCompatible(side === "input" ? type : slot.dataset.slotType, side === "input" ? slot.dataset.slotType : type));
    }
  }
  function clearCompatible() {
    for (const slot of canvas.querySelectorAll(".slot.compatible")) slot.classList.remove("compatible");
  }

  function firstCompatibleInput(node, type) {
    const free = node.inputs.find((i) => !i.widget && i.link == null && typesCompatible(type, i.type));
    return (free ?? node.inputs.find((i) => !i.widget && typesCompatible(type, i.type)))?.name;
  }
  function firstCompatibleOutput(node, type) {
    const i = node.outputs.findIndex((o, slot) => typesCompatible(graph.outputType(node, slot), type));
    return i >= 0 ? String(i) : undefined;
  }

  function startGroupMove(e, groupEl) {
    const group = graph.groups.find((g) => g.id === Number(groupEl.dataset.groupId));
    const members = graph.nodesInGroup(group);
    const start = [e.clientX, e.clientY];
    const origin = [...group.bounding];
    const origins = members.map((n) => [...n.pos]);
    let moved = false;
    return {
      move(ev) {
        const dx = Math.round((ev.clientX - start[0]) / view.scale);
        const dy = Math.round((ev.clientY - start[1]) / view.scale);
        moved = moved || dx !== 0 || dy !== 0;
        group.bounding = [origin[0] + dx, origin[1] + dy, origin[2], origin[3]];
        groupEl.style.transform = `translate(${group.bounding[0]}px, ${group.bounding[1]}px)`;
        members.forEach((n, i) => { n.pos = [origins[i][0] + dx, origins[i][1] + dy]; view.positionNode(n); });
        view.updateLinks(members.map((n) => n.id));
      },
      end() { if (moved) hooks.commit(); },
    };
  }

  function startNodeResize(e, nodeId) {
    const node = graph.nodes.get(nodeId);
    const el = view.nodeEl(nodeId);
    const start = e.clientX;
    const width = node.size[0];
    return {
      move(ev) {
        node.size[0] = Math.max(140, Math.round(width + (ev.clientX - start) / view.scale));
        el.style.width = `${node.size[0]}px`;
      },
      end() {
        view.measureSlots(node);
        view.updateLinks([nodeId]);
        hooks.commit();
      },
    };
  }

  function startGroupResize(e, groupEl) {
    const group = graph.groups.find((g) => g.id === Number(groupEl.dataset.groupId));
    const start = [e.clientX, e.clientY];
    const [w0, h0] = group.bounding.slice(2);
    return {
      move(ev) {
        group.bounding[2] = Math.max(80, Math.round(w0 + (ev.clientX - start[0]) / view.scale));
        group.bounding[3] = Math.max(60, Math.round(h0 + (ev.clientY - start[1]) / view.scale));
        Object.assign(groupEl.style, { width: `${group.bounding[2]}px`, height: `${group.bounding[3]}px` });
      },
      end() { hooks.commit(); },
    };
  }
}
