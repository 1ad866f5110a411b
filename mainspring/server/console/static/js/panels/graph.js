// A graph drawn as SVG: a simple layered layout (top to bottom), nodes lit by the run's state.

import { s } from "../dom.js";

export const START = "__start__";
export const END = "__end__";

const NODE_H = 26;
const GAP_X = 18;
const GAP_Y = 44;
const PAD = 12;
const CHAR_W = 7; // monospace-ish label width estimate

/** Nodes and edges from GET /v1/graphs/{name}, whatever shape each entry has. */
export function normalise(graph) {
  const names = new Set();
  for (const n of graph.nodes || []) {
    const name = typeof n === "string" ? n : n && (n.name || n.id);
    if (name) names.add(name);
  }
  const edges = [];
  for (const e of graph.edges || []) {
    const sources = Array.isArray(e.source) ? e.source : [e.source];
    const targets = Array.isArray(e.target) ? e.target : [e.target];
    for (const source of sources) {
      for (const target of targets) {
        if (source == null || target == null) continue;
        edges.push({ source, target, kind: e.kind || "edge", label: e.label ?? e.key ?? null });
        names.add(source);
        names.add(target);
      }
    }
  }
  return { names: [...names], edges };
}

/** Layers by longest path from START over the graph without its back edges (loops). */
export function layout({ names, edges }) {
  const out = new Map(names.map((n) => [n, []]));
  for (const e of edges) out.get(e.source).push(e);
  // Back edges: found by a depth-first walk from START (then from anything not reached).
  const back = new Set();
  const state = new Map(); // 1 on the stack, 2 done
  const visit = (n) => {
    state.set(n, 1);
    for (const e of out.get(n)) {
      const st = state.get(e.target);
      if (st === 1) back.add(e);
      else if (!st) visit(e.target);
    }
    state.set(n, 2);
  };
  const roots = names.includes(START) ? [START, ...names] : names;
  for (const n of roots) if (!state.get(n)) visit(n);

  const forward = edges.filter((e) => !back.has(e));
  const indeg = new Map(names.map((n) => [n, 0]));
  for (const e of forward) indeg.set(e.target, indeg.get(e.target) + 1);
  const layer = new Map(names.map((n) => [n, 0]));
  const ready = names.filter((n) => indeg.get(n) === 0);
  while (ready.length) {
    const n = ready.shift();
    for (const e of forward.filter((f) => f.source === n)) {
      layer.set(e.target, Math.max(layer.get(e.target), layer.get(n) + 1));
      indeg.set(e.target, indeg.get(e.target) - 1);
      if (indeg.get(e.target) === 0) ready.push(e.target);
    }
  }
  // END sits alone on the last layer, however short its longest path.
  const maxLayer = Math.max(0, ...[...layer.entries()].filter(([n]) => n !== END).map(([, l]) => l));
  if (layer.has(END)) layer.set(END, maxLayer + 1);

  const layers = [];
  for (const n of names) (layers[layer.get(n)] ||= []).push(n);
  // One pass of barycentres: order a layer by the mean position of its parents.
  for (let i = 1; i < layers.length; i++) {
    const prev = new Map((layers[i - 1] || []).map((n, k) => [n, k]));
    const bary = (n) => {
      const ps = forward.filter((e) => e.target === n && prev.has(e.source))
        .map((e) => prev.get(e.source));
      return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : Infinity;
    };
    if (layers[i]) layers[i].sort((a, b) => bary(a) - bary(b));
  }

  const widthOf = (n) => Math.max(48, label(n).length * CHAR_W + 20);
  const rowWidths = layers.map((ns) => (ns || []).reduce((w, n) => w + widthOf(n), 0) +
    GAP_X * Math.max(0, (ns || []).length - 1));
  const width = Math.max(160, ...rowWidths) + 2 * PAD;
  const pos = new Map();
  layers.forEach((ns, i) => {
    let x = (width - rowWidths[i]) / 2;
    for (const n of ns || []) {
      pos.set(n, { x, y: PAD + i * (NODE_H + GAP_Y), w: widthOf(n), h: NODE_H });
      x += widthOf(n) + GAP_X;
    }
  });
  const height = PAD * 2 + layers.length * NODE_H + Math.max(0, layers.length - 1) * GAP_Y;
  return { pos, back, width, height };
}

export function label(n) {
  return n === START ? "START" : n === END ? "END" : n;
}

/** The graph as an <svg>; nodes are <g data-node=name> for highlight(). */
export function drawGraph(graph) {
  const shape = normalise(graph);
  const { pos, back, width, height } = layout(shape);
  const arrow = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
  s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  const edges = shape.edges.map((e) => {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    let d;
    if (back.has(e) || b.y <= a.y) {
      // A loop back up: around the right of both boxes.
      const x1 = a.x + a.w;
      const x2 = b.x + b.w;
      const out = Math.max(x1, x2) + 24;
      d = `M ${x1} ${a.y + a.h / 2} C ${out} ${a.y + a.h / 2}, ${out} ${b.y + b.h / 2}, ` +
        `${x2} ${b.y + b.h / 2}`;
    } else {
      const x1 = a.x + a.w / 2;
      const y1 = a.y + a.h;
      const x2 = b.x + b.w / 2;
      const y2 = b.y;
      const my = (y1 + y2) / 2;
      d = `M ${x1} ${y1} C ${x1} ${my}, ${x2} ${my}, ${x2} ${y2}`;
    }
    const path = s("path", { d, class: `edge edge-${e.kind}`, "marker-end": "url(#arrow)",
      dataset: { source: e.source, target: e.target } });
    if (e.label !== null && e.label !== undefined) {
      path.append(s("title", {}, `${label(e.source)} → ${label(e.target)}: ${e.label}`));
    }
    return path;
  });
  const nodes = shape.names.map((n) => {
    const p = pos.get(n);
    const terminal = n === START || n === END;
    return s("g", { class: `node${terminal ? " terminal" : ""}`, dataset: { node: n },
      transform: `translate(${p.x} ${p.y})` },
    s("title", {}, label(n)),
    s("rect", { width: p.w, height: p.h, rx: terminal ? p.h / 2 : 4 }),
    s("text", { x: p.w / 2, y: p.h / 2 + 4, "text-anchor": "middle" }, label(n)));
  });
  return s("svg", { class: "graph", viewBox: `0 0 ${width + 30} ${height}`,
    width: width + 30, height, role: "img",
    "aria-label": `Graph ${graph.name || ""}: ${shape.names.length} nodes` },
  s("defs", {}, arrow), s("g", { class: "edges" }, edges), s("g", { class: "nodes" }, nodes));
}

/** Light the nodes: marks = {running, parked, failed, visited, selected} (sets of names). */
export function highlight(svg, marks) {
  for (const g of svg.querySelectorAll("g.node")) {
    const n = g.dataset.node;
    for (const cls of ["running", "parked", "failed", "visited", "selected", "done"]) {
      g.classList.toggle(cls, Boolean(marks[cls] && marks[cls].has(n)));
    }
    const current = ["running", "parked", "failed"].find((c) => marks[c] && marks[c].has(n));
    if (current) g.setAttribute("aria-current", "step");
    else g.removeAttribute("aria-current");
  }
}

/** Where the run is, from its journal: the nodes running, parked, failed and done. */
export function marksFrom(events, upTo = Infinity) {
  const running = new Map(); // "step/task" -> node
  const parked = new Set();
  const failed = new Set();
  const visited = new Set();
  const done = new Set();
  for (const e of events) {
    if (e.seq > upTo) break;
    const d = e.data || {};
    const key = `${d.step}/${d.task}`;
    switch (e.kind) {
      case "run_started":
        visited.add(START);
        break;
      case "step_started":
        running.set(key, d.node);
        failed.delete(d.node);
        break;
      case "step_finished":
        running.delete(key);
        visited.add(d.node);
        break;
      case "step_failed":
        if (!d.retry) {
          running.delete(key);
          failed.add(d.node);
        }
        break;
      case "interrupted":
        running.delete(key);
        parked.add(d.node);
        break;
      case "resumed":
        parked.clear();
        break;
      case "failed":
        if (d.error && d.error.node) failed.add(d.error.node);
        running.clear();
        break;
      case "finished":
        running.clear();
        done.add(END);
        visited.add(END);
        break;
      case "cancelled":
        running.clear();
        parked.clear();
        break;
      default:
    }
  }
  return { running: new Set(running.values()), parked, failed, visited, done };
}
