"use strict";
// The EdgeFlow dashboard: one WebSocket pushes a snapshot a second; the video tiles are MJPEG <img> streams.
(() => {
  const token = new URLSearchParams(location.search).get("token");
  // <img> and WebSocket can't send headers, so the token the page was opened with rides along as ?token=.
  const q = token ? "?token=" + encodeURIComponent(token) : "";
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const history = [];
  const tiles = new Map();
  let last = null;
  // The charts' columns: {ts, nodes: {name: {fps, e2e_p50, ...}}, links: {"a->b": [...]}}, from /api/history then
  // one sample a second from the WebSocket.
  let hist = null;
  const HISTORY_MAX = 600;
  const charts = {};
  window.edgeflowCharts = charts;
  const PALETTE = ["#35c7f3", "#3ddc97", "#b48cff", "#ffb547", "#ff5d6c", "#7aa2ff", "#f78fb3", "#c2e812", "#ff8c42", "#9aa5b1"];

  const num = (v, d = 1) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));
  const ms = (v) => (v === null || v === undefined ? "—" : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v));
  const pair = (a, b) => `${ms(a)} / ${ms(b)}`;
  const int = (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"));
  const ago = (s) => (s === null ? "never" : s < 1.5 ? "now" : s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`);

  function el(tag, attrs = {}, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Clock ------------------------------------------------------------------------------------------------
  setInterval(() => { $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false }); }, 500);

  // WebSocket with reconnect -------------------------------------------------------------------------------
  function connect(delay = 500) {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + q);
    const conn = $("conn");
    ws.onopen = () => { conn.className = "conn live"; conn.querySelector("b").textContent = "live"; delay = 500; };
    ws.onmessage = (ev) => { try { render(JSON.parse(ev.data)); } catch (err) { console.error(err); } };
    ws.onclose = () => {
      conn.className = "conn down"; conn.querySelector("b").textContent = "reconnecting";
      setTimeout(() => connect(Math.min(delay * 2, 5000)), delay);
    };
  }

  // Rendering ----------------------------------------------------------------------------------------------
  function render(s) {
    last = s;
    document.body.dataset.updated = String(s.ts);
    $("app-name").textContent = s.app || "";
    $("gateway-name").textContent = "gateway: " + s.gateway;
    $("secured").hidden = !s.secured;
    renderKpis(s);
    renderTiles(s);
    renderGraph(s);
    renderNodes(s);
    renderData(s);
    renderTraces(s);
    renderErrors(s);
    appendHistory(s.history);
  }

  function renderKpis(s) {
    const nodes = s.nodes || [];
    const up = nodes.filter((n) => n.status === "up").length;
    const gone = nodes.filter((n) => n.status === "gone").length;
    $("k-up").textContent = `${up} / ${nodes.length}`;
    $("k-up").parentElement.classList.toggle("bad", gone > 0);
    $("k-up-sub").textContent = gone ? `${gone} gone` : "all reporting";
    const gw = nodes.find((n) => n.name === s.gateway) || {};
    const fps = Object.values(s.topics || {}).reduce((a, t) => a + (t.fps || 0), 0);
    $("k-fps").textContent = num(fps);
    history.push(fps);
    if (history.length > 60) history.shift();
    const max = Math.max(1, ...history);
    const step = 120 / Math.max(history.length - 1, 1);
    const pts = history.map((v, i) => `${i * step},${26 - (v / max) * 24}`).join(" ");
    $("k-spark").querySelector("polyline").setAttribute("points", pts);
    $("k-e2e").textContent = pair(gw.e2e_ms_p50, gw.e2e_ms_p99) + " ms";
    const depth = (s.links || []).reduce((a, l) => a + (l.depth || 0), 0);
    $("k-depth").textContent = int(depth);
    const dropped = nodes.reduce((a, n) => a + (n.dropped || 0), 0);
    const failed = nodes.reduce((a, n) => a + (n.failed || 0), 0);
    $("k-dropped").textContent = int(dropped);
    $("k-failed").textContent = int(failed);
    $("k-failed").parentElement.classList.toggle("bad", failed > 0);
  }

  function renderTiles(s) {
    const topics = Object.entries(s.topics || {}).filter(([, t]) => t.kind === "image");
    $("no-video").hidden = topics.length > 0;
    $("video-count").textContent = topics.length ? String(topics.length) : "";
    for (const [name, t] of topics) {
      let tile = tiles.get(name);
      if (!tile) {
        tile = makeTile(name);
        tiles.set(name, tile);
        $("tiles").appendChild(tile.root);
      }
      const stale = t.age_s === null || t.age_s > 3;
      tile.badge.className = "badge " + (stale ? "stale" : "live");
      tile.badge.textContent = stale ? "NO SIGNAL" : "LIVE";
      tile.nosignal.hidden = !stale;
      tile.fps.textContent = num(t.fps);
      tile.frame.textContent = t.frame_id ?? "—";
      tile.size.textContent = t.shape ? `${t.shape[1]}×${t.shape[0]}` : "—";
      tile.viewers.textContent = t.viewers ?? 0;
    }
  }

  function makeTile(name) {
    const root = el("div", { class: "tile", "data-topic": name });
    const img = el("img", { alt: name, src: "/video/" + encodeURIComponent(name) + q });
    // A stream that breaks (gateway restart, network) comes back by itself.
    img.onerror = () => setTimeout(() => { img.src = "/video/" + encodeURIComponent(name) + q + (q ? "&" : "?") + "r=" + Date.now(); }, 2000);
    const nosignal = el("div", { class: "nosignal" }, "NO SIGNAL");
    const cap = el("div", { class: "cap" });
    cap.append(el("span", { class: "topic" }, name));
    const badge = el("span", { class: "badge live" }, "LIVE");
    cap.append(badge);
    const stats = el("div", { class: "stats" });
    const fig = (label) => { const b = el("b"); const span = el("span"); span.append(b, " " + label); stats.append(span); return b; };
    const fps = fig("fps"), frame = fig("frame"), size = fig(""), viewers = fig("viewers");
    const screen = el("div", { class: "screen" });
    screen.append(img, nosignal);
    root.append(cap, screen, stats);
    return { root, img, badge, nosignal, fps, frame, size, viewers };
  }

  // Graph: longest-path layers from the sources, left to right --------------------------------------------
  function layout(nodes, links) {
    const rank = new Map(nodes.map((n) => [n.name, 0]));
    for (let i = 0; i < nodes.length; i++) {
      let moved = false;
      for (const l of links) {
        const r = (rank.get(l.source) ?? 0) + 1;
        if (rank.has(l.target) && r > rank.get(l.target) && r < nodes.length) { rank.set(l.target, r); moved = true; }
      }
      if (!moved) break;
    }
    const cols = [];
    for (const n of nodes) (cols[rank.get(n.name)] ||= []).push(n);
    return cols.filter(Boolean);
  }

  function renderGraph(s) {
    const svg = $("graph");
    const nodes = s.nodes || [], links = s.links || [];
    // Layers run top to bottom: the card is taller than wide beside the video, and names stay legible.
    const W = 200, H = 74, GX = 28, GY = 64, PAD = 16, SIDE = 90;
    const rows = layout(nodes, links);
    const widest = Math.max(1, ...rows.map((r) => r.length));
    const width = Math.max(PAD * 2 + widest * W + (widest - 1) * GX + SIDE * 2, 520);
    const height = PAD * 2 + rows.length * H + Math.max(0, rows.length - 1) * GY;
    const pos = new Map(), rankOf = new Map();
    rows.forEach((row, ri) => {
      const offset = (width - (row.length * W + (row.length - 1) * GX)) / 2;
      row.forEach((n, ci) => { pos.set(n.name, { x: offset + ci * (W + GX), y: PAD + ri * (H + GY) }); rankOf.set(n.name, ri); });
    });
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.style.maxHeight = height * 1.4 + "px";
    svg.replaceChildren();
    const byName = new Map(nodes.map((n) => [n.name, n]));
    for (const l of links) {
      const a = pos.get(l.source), b = pos.get(l.target);
      if (!a || !b) continue;
      const src = byName.get(l.source) || {};
      let d, lx, ly;
      if (rankOf.get(l.target) - rankOf.get(l.source) > 1) {
        // A link that skips layers bows out to the side instead of running through the nodes between.
        const left = a.x + W / 2 < width / 2;
        const x1 = left ? a.x : a.x + W, x2 = left ? b.x : b.x + W, y1 = a.y + H / 2, y2 = b.y + H / 2;
        const cx = left ? Math.min(x1, x2) - SIDE : Math.max(x1, x2) + SIDE;
        d = `M${x1},${y1} C${cx},${y1} ${cx},${y2} ${x2},${y2}`;
        lx = 0.25 * x1 + 0.75 * cx; ly = (y1 + y2) / 2;
      } else {
        const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y, my = (y1 + y2) / 2;
        d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
        lx = (x1 + x2) / 2; ly = my;
      }
      const cls = ["g-edge", l.transport];
      if (src.status === "up" && (src.fps_out || 0) > 0) cls.push("flow");
      if ((l.depth || 0) > 0) cls.push("backlog");
      const g = el("svg:g", { class: cls.join(" "), "data-link": `${l.source}->${l.target}` });
      g.append(el("svg:path", { d }));
      const label = l.transport === "redis" ? `redis · depth ${l.depth ?? "?"}` : `${l.transport} · ${l.qos}`;
      const pill = el("svg:g", { class: "pill" });
      const lw = 14 + label.length * 6.4;
      pill.append(el("svg:rect", { x: lx - lw / 2, y: ly - 11, width: lw, height: 22, rx: 11 }));
      pill.append(el("svg:text", { x: lx, y: ly + 4, "text-anchor": "middle" }, label));
      g.append(pill);
      svg.append(g);
    }
    for (const n of nodes) {
      const p = pos.get(n.name);
      const g = el("svg:g", { class: `g-node ${n.status}`, transform: `translate(${p.x},${p.y})`, "data-node": n.name });
      g.append(el("svg:rect", { class: "box", width: W, height: H, rx: 10 }));
      g.append(el("svg:rect", { class: "stripe", width: 4, height: H - 20, x: 0, y: 10, rx: 2 }));
      g.append(el("svg:text", { class: "name", x: 16, y: 24 }, n.name));
      g.append(el("svg:text", { class: "sub", x: 16, y: 41 }, [n.type, n.device].filter(Boolean).join(" · ")));
      const fps = n.type === "producer" ? n.fps_out : n.fps_in;
      g.append(el("svg:text", { class: "fig", x: 16, y: 61 }, `${n.replicas_alive}/${n.replicas} up  ${num(fps)} fps`));
      if (n.status === "gone") g.append(el("svg:text", { class: "gone-label", x: W - 12, y: 24, "text-anchor": "end" }, "GONE"));
      svg.append(g);
    }
  }

  function renderNodes(s) {
    const body = $("nodes").querySelector("tbody");
    const rows = (s.nodes || []).map((n) => {
      const tr = el("tr", { class: n.status, "data-node": n.name });
      const name = el("td");
      name.append(el("span", { class: "dot" }), el("span", { class: "nm" }, n.name));
      if (n.status === "gone") name.append(el("span", { class: "tag" }, "GONE"));
      const cell = (text, cls = "n") => el("td", { class: cls }, String(text));
      const since = n.last_seen ? Math.max(0, s.ts - n.last_seen) : null;
      tr.append(
        name, cell(n.type, "type"), cell(n.device || "—", "type"),
        cell(`${n.replicas_alive} / ${n.replicas}`, n.replicas_alive < n.replicas ? "n warn" : "n"),
        cell(num(n.fps_in)), cell(num(n.fps_out)),
        cell(int(n.dropped), n.dropped ? "n warn" : "n"), cell(int(n.failed), n.failed ? "n bad" : "n"),
        cell(pair(n.proc_ms_p50, n.proc_ms_p99)), cell(pair(n.e2e_ms_p50, n.e2e_ms_p99)), cell(ago(since)),
        cell(n.last_error ? ago(Math.max(0, s.ts - n.last_error.ts)) : "—", n.last_error ? "type bad" : "type"),
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function renderData(s) {
    const data = Object.entries(s.topics || {}).filter(([, t]) => t.kind && t.kind !== "image");
    $("data-card").hidden = data.length === 0;
    const boxes = data.map(([name, t]) => {
      const box = el("div", { class: "dt", "data-topic": name });
      const head = el("header");
      head.append(el("b", {}, name), el("span", {}, `${t.kind} · ${num(t.fps)} fps · #${t.frame_id ?? "—"}`));
      const d = t.data || {};
      const text = d.kind === "json" ? JSON.stringify(d.value ?? d.preview, null, 1)
        : d.kind === "bytes" ? `${d.size} bytes  ${d.head}` : `array ${JSON.stringify(d.shape)} ${d.dtype}`;
      box.append(head, el("pre", {}, text));
      return box;
    });
    $("data-topics").replaceChildren(...boxes);
  }

  // History charts (uPlot) -------------------------------------------------------------------------------
  async function loadHistory() {
    try {
      const r = await fetch("/api/history" + q);
      if (r.ok) { hist = await r.json(); drawCharts(); }
    } catch (err) { console.error(err); }
  }

  function appendHistory(p) {
    if (!hist || !p) return;
    const n = hist.ts.length;
    if (n && hist.ts[n - 1] >= p.ts) return;
    hist.ts.push(p.ts);
    for (const [name, figs] of Object.entries(p.nodes || {})) {
      if (!hist.nodes[name]) hist.nodes[name] = Object.fromEntries(Object.keys(figs).map((k) => [k, new Array(n).fill(null)]));
      for (const [k, v] of Object.entries(figs)) (hist.nodes[name][k] ||= new Array(n).fill(null)).push(v ?? null);
    }
    for (const [name, cols] of Object.entries(hist.nodes)) for (const col of Object.values(cols)) if (col.length < n + 1) col.push(null);
    for (const [k, v] of Object.entries(p.links || {})) (hist.links[k] ||= new Array(n).fill(null)).push(v ?? null);
    for (const col of Object.values(hist.links)) if (col.length < n + 1) col.push(null);
    if (hist.ts.length > HISTORY_MAX) {
      const cut = hist.ts.length - HISTORY_MAX;
      hist.ts.splice(0, cut);
      for (const cols of Object.values(hist.nodes)) for (const col of Object.values(cols)) col.splice(0, cut);
      for (const col of Object.values(hist.links)) col.splice(0, cut);
    }
    drawCharts();
  }

  const any = (col) => col.some((v) => v !== null && v !== undefined && v !== 0);

  function chartSpecs() {
    const nodes = Object.entries(hist.nodes), links = Object.entries(hist.links);
    const fps = nodes.map(([name, c]) => ({ label: name, values: c.fps }));
    const e2e = [];
    for (const [name, c] of nodes) {
      if (!c.e2e_p50.some((v) => v !== null)) continue;
      e2e.push({ label: name + " p50", values: c.e2e_p50, key: name }, { label: name + " p99", values: c.e2e_p99, key: name, dash: [5, 4] });
    }
    const depth = links.map(([name, col]) => ({ label: name, values: col }));
    const sum = (field) => hist.ts.map((_, i) => nodes.reduce((a, [, c]) => a + (c[field][i] || 0), 0));
    const drops = [{ label: "dropped (all)", values: sum("dropped") }, { label: "failed (all)", values: sum("failed"), key: "failed" }];
    for (const [name, c] of nodes) {
      if (any(c.dropped)) drops.push({ label: name + " dropped", values: c.dropped, key: name });
      if (any(c.failed)) drops.push({ label: name + " failed", values: c.failed, key: name, dash: [5, 4] });
    }
    return { fps, e2e, depth, drops };
  }

  function drawCharts() {
    if (!hist || typeof uPlot === "undefined") return;
    const span = hist.ts.length ? Math.round(hist.ts[hist.ts.length - 1] - hist.ts[0]) : 0;
    $("history-span").textContent = span ? `last ${span >= 120 ? Math.round(span / 60) + " min" : span + " s"}` : "";
    for (const [id, series] of Object.entries(chartSpecs())) drawChart(id, series);
  }

  function drawChart(id, series) {
    const box = $("ch-" + id);
    const keys = series.map((s) => s.label).join("|");
    const data = [hist.ts, ...series.map((s) => s.values)];
    let chart = charts[id];
    if (chart && chart.keys === keys) { chart.setData(data); return; }
    if (chart) chart.destroy();
    const colors = new Map();
    const colour = (k) => { if (!colors.has(k)) colors.set(k, PALETTE[colors.size % PALETTE.length]); return colors.get(k); };
    const axis = { stroke: "#8b98a9", grid: { stroke: "#1c2531", width: 1 }, ticks: { stroke: "#232d3b" } };
    chart = new uPlot({
      width: Math.max(240, box.clientWidth), height: 170,
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
      axes: [axis, { ...axis, size: 48 }],
      legend: { live: false },
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: colour(s.key || s.label), width: 1.6, dash: s.dash, spanGaps: false, points: { show: false } }))],
    }, data, box);
    chart.keys = keys;
    charts[id] = chart;
  }

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) chart.setSize({ width: Math.max(240, $("ch-" + id).clientWidth), height: 170 });
  });

  // Latency breakdown -------------------------------------------------------------------------------------
  function renderTraces(s) {
    const paths = s.traces || [];
    $("trace-card").hidden = paths.length === 0;
    const boxes = paths.map((p) => {
      const box = el("div", { class: "path", "data-path": p.nodes.join(">") });
      const head = el("header");
      head.append(el("b", {}, p.nodes.join(" → ")),
        el("span", {}, `total ${pair(p.total_p50_ms, p.total_p99_ms)} ms · slowest ${p.slowest} · ${p.samples} frames`));
      const bar = el("div", { class: "bar" });
      const total = p.stages.reduce((a, st) => a + (st.p50_ms || 0), 0) || 1;
      const rows = el("tbody");
      for (const st of p.stages) {
        const slow = st.name === p.slowest;
        const seg = el("span", { class: `seg k-${st.kind}${slow ? " slowest" : ""}`, title: `${st.name}: p50 ${ms(st.p50_ms)} ms`, "data-stage": st.name });
        seg.style.flexGrow = String(Math.max((st.p50_ms || 0) / total, 0.004));
        if ((st.p50_ms || 0) / total > 0.12) seg.textContent = st.name;
        bar.append(seg);
        const tr = el("tr", { class: "stage" + (slow ? " slowest" : ""), "data-stage": st.name });
        const name = el("td");
        name.append(el("i", { class: "sw k-" + st.kind }), el("span", {}, st.name));
        if (slow) name.append(el("span", { class: "tag slow" }, "SLOWEST"));
        const skew = el("td", { class: "type" }, st.cross_host ? "across hosts: clock skew" : "one host");
        tr.append(name, el("td", { class: "type" }, st.kind), el("td", { class: "n" }, ms(st.p50_ms)), el("td", { class: "n" }, ms(st.p99_ms)), skew);
        rows.append(tr);
      }
      const table = el("table", { class: "stages" });
      const thead = el("thead");
      thead.innerHTML = '<tr><th>Stage</th><th>Kind</th><th class="n">p50 ms</th><th class="n">p99 ms</th><th>Clocks</th></tr>';
      table.append(thead, rows);
      box.append(head, bar, table);
      return box;
    });
    $("traces").replaceChildren(...boxes);
  }

  // Errors ------------------------------------------------------------------------------------------------
  function renderErrors(s) {
    const failing = (s.nodes || []).filter((n) => n.last_error);
    $("errors-card").hidden = failing.length === 0;
    const rows = failing.map((n) => {
      const tr = el("tr", { "data-node": n.name });
      const when = new Date(n.last_error.ts * 1000).toLocaleTimeString([], { hour12: false });
      tr.append(el("td", { class: "nm" }, n.name), el("td", { class: "n when" }, `${when} (${ago(Math.max(0, s.ts - n.last_error.ts))})`),
        el("td", { class: "msg" }, n.last_error.message));
      return tr;
    });
    $("errors").querySelector("tbody").replaceChildren(...rows);
  }

  loadHistory();
  connect();
})();
