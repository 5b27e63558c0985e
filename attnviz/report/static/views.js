/* attnviz report, part 2: one drawing per kind of map, and the controls (stage tabs, block and map pickers,
   colormap, opacity). Needs core.js. */

/* ---------------------------------------------------------------- maps over the photo */
function planeHeat(entry) {
  const cells = values(entry.cells);
  const [lo, hi] = entry.range || [entry.cells.lo, entry.cells.hi];
  return { cells, heat: resample(cells, entry.grid[0], entry.grid[1]), lo, hi };
}

function hoverCells(canvas, h, w, read, what) {
  canvas.addEventListener("mousemove", (event) => {
    const [X, Y] = pixelOf(...eventPixel(event, canvas));
    const cell = cellOf(X, Y, h, w);
    if (!cell) { say(`pixel ${X},${Y} · not seen by the model`); return; }
    const v = read(cell[0] * w + cell[1]);
    say(`pixel ${X},${Y} · cell ${cell[0]},${cell[1]} of ${h}x${w} · ${what} ${fmt(v)}`,
        { x: X, y: Y, row: cell[0], col: cell[1], value: v });
  });
}

function drawPlane(entry, into) {
  const panel = photoPanel(entry.caption);
  const p = planeHeat(entry);
  drawHeat(panel.ctx, p.heat, p.lo, p.hi);
  hoverCells(panel.canvas, entry.grid[0], entry.grid[1], (i) => p.cells[i], "value");
  panel.figure.append(colourBar(p.lo, p.hi, entry.range ? "fixed range" : "the map's range"));
  into.append(panel.figure);
  AV.shown = { type: "plane", name: entry.name };
}

function drawCoordinate(entry, into) {
  const panel = photoPanel(entry.caption);
  const p = planeHeat(entry.product);
  drawHeat(panel.ctx, p.heat, p.lo, p.hi);
  hoverCells(panel.canvas, entry.product.grid[0], entry.product.grid[1], (i) => p.cells[i], "a_h x a_w");
  const strip = (plane, horizontal) => {
    const q = planeHeat(plane);
    const canvas = el("canvas", { width: horizontal ? DW : 28, height: horizontal ? 28 : DH, class: "strip" });
    const ctx = canvas.getContext("2d");
    const colours = lut(AV.state.cmap);
    const span = q.hi > q.lo ? q.hi - q.lo : 1;
    const along = horizontal ? DW : DH;
    const profile = new Float32Array(along);
    for (let i = 0; i < along; i++) {
      let v = NaN;  // the strip is constant across: its value at the first seen pixel of the other axis
      for (let j = 0; j < (horizontal ? DH : DW) && Number.isNaN(v); j++) v = q.heat[horizontal ? j * DW + i : i * DW + j];
      profile[i] = v;
      const k = Number.isNaN(v) ? -1 : Math.round(Math.min(Math.max((v - q.lo) / span, 0), 1) * 255) * 3;
      ctx.fillStyle = k < 0 ? "#888" : `rgb(${colours[k]},${colours[k + 1]},${colours[k + 2]})`;
      if (horizontal) ctx.fillRect(i, 0, 1, 28); else ctx.fillRect(0, i, 28, 1);
    }
    const name = horizontal ? "a_w" : "a_h";
    canvas.addEventListener("mousemove", (event) => {
      const [px, py] = eventPixel(event, canvas);
      const [X, Y] = pixelOf(px, py);
      const at = horizontal ? px : py;
      say(`${name} at ${horizontal ? "column" : "row"} ${horizontal ? X : Y} of the photo · ${fmt(profile[at])}`,
          { value: profile[at] });
    });
    return canvas;
  };
  panel.canvas.style.width = `${DW}px`;  // the strips line up with the photo's own pixels: no scaling here
  panel.canvas.style.height = `${DH}px`;
  const grid = el("div", { class: "coordinate" },
    el("div", { class: "corner", text: "a_w ↓ a_h →" }), strip(entry.a_w, true), strip(entry.a_h, false), panel.canvas);
  into.append(el("figure", { class: "panel" }, grid, el("figcaption", { text: entry.caption }),
    colourBar(p.lo, p.hi, "a_h x a_w; strips: a_h and a_w, each over its own range")));
  AV.shown = { type: "coordinate", name: entry.name };
}

/* ---------------------------------------------------------------- self-attention rows */
function nearestQuery(entry, cell) {
  const w = entry.grid[1];
  if (!entry.queries) return { index: cell[0] * w + cell[1], token: cell[0] * w + cell[1] };
  let best = 0, bestD = Infinity;
  entry.queries.forEach((token, index) => {
    const d = (Math.floor(token / w) - cell[0]) ** 2 + ((token % w) - cell[1]) ** 2;
    if (d < bestD) { bestD = d; best = index; }
  });
  return { index: best, token: entry.queries[best] };
}

function queryPixel() {
  if (!AV.state.query) AV.state.query = [Math.floor(G.original[0] / 2), Math.floor(G.original[1] / 2)];
  return AV.state.query;
}

function rowPlanes(entry, cell) {
  const [h, w] = entry.grid;
  const all = values(entry.rows);
  if (entry.type === "crisscross") {
    const keys = h + w, row = all.subarray((cell[0] * w + cell[1]) * keys, (cell[0] * w + cell[1] + 1) * keys);
    const plane = new Float32Array(h * w);
    for (let i = 0; i < h; i++) plane[i * w + cell[1]] += row[i];
    for (let j = 0; j < w; j++) plane[cell[0] * w + j] += row[h + j];
    return { token: cell[0] * w + cell[1], planes: [plane], rows: [Array.from(row)] };
  }
  const q = nearestQuery(entry, cell);
  const nq = entry.rows.shape[1], keys = h * w;
  const planes = entry.heads.map((_, k) => all.subarray((k * nq + q.index) * keys, (k * nq + q.index + 1) * keys));
  return { token: q.token, planes, rows: planes.map((p) => Array.from(p)) };
}

function drawRows(entry, into) {
  const [h, w] = entry.grid;
  const [X, Y] = queryPixel();
  const cell = cellOf(X, Y, h, w);
  const labels = entry.type === "crisscross" ? [""] : entry.heads;
  into.append(el("p", { class: "note", text: `Click any pixel to see where it looks (${entry.note}).` }));
  if (!cell) {
    into.append(el("p", { text: `pixel ${X},${Y} is outside what the model saw: click inside the photo.` }));
    AV.shown = { type: entry.type, name: entry.name, pixel: [X, Y], cell: null, heads: [] };
  }
  const picked = cell ? rowPlanes(entry, cell) : null;
  const row = el("div", { class: "panels" });
  labels.forEach((label, k) => {
    const usedCell = picked ? [Math.floor(picked.token / w), picked.token % w] : null;
    const title = `${entry.caption}${label ? " · " + label : ""}` +
      (usedCell ? ` · query ${X},${Y} → cell ${usedCell[0]},${usedCell[1]}` : "");
    const panel = photoPanel(title);
    if (picked) {
      const [lo, hi] = extent(picked.planes[k]);
      drawHeat(panel.ctx, resample(picked.planes[k], h, w), lo, hi);
      marker(panel.ctx, ((X + 0.5) * DW) / G.original[0], ((Y + 0.5) * DH) / G.original[1]);
      if (entry.queries) marker(panel.ctx, ...cellCentre(usedCell[0], usedCell[1], h, w), "orange");
      panel.figure.append(colourBar(lo, hi, "this row's range"));
      hoverCells(panel.canvas, h, w, (i) => picked.planes[k][i], `weight${label ? " (" + label + ")" : ""}`);
    } else drawPhoto(panel.ctx);
    panel.canvas.classList.add("clickable");
    panel.canvas.addEventListener("click", (event) => {
      AV.state.query = pixelOf(...eventPixel(event, panel.canvas));
      render();
    });
    row.append(panel.figure);
  });
  into.append(row);
  if (picked) {
    AV.shown = { type: entry.type, name: entry.name, pixel: [X, Y], cell, token: picked.token,
      heads: labels.map((label, k) => ({ label, values: picked.rows[k] })) };
  }
}

/* ---------------------------------------------------------------- matrices that are not over the photo */
function drawHeatmap(entry, into) {
  const [, pn, pk] = entry.cells.shape;
  const all = values(entry.cells);
  if (entry.note) into.append(el("p", { class: "note", text: entry.note }));
  const row = el("div", { class: "panels" });
  entry.heads.forEach((label, k) => {
    const canvas = el("canvas", { width: pk, height: pn, class: "matrix" });
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(pk, pn);
    const colours = lut(AV.state.cmap);
    const span = entry.cells.hi > entry.cells.lo ? entry.cells.hi - entry.cells.lo : 1;
    for (let i = 0; i < pn * pk; i++) {
      const c = Math.round(Math.min(Math.max((all[k * pn * pk + i] - entry.cells.lo) / span, 0), 1) * 255) * 3;
      image.data.set([colours[c], colours[c + 1], colours[c + 2], 255], i * 4);
    }
    ctx.putImageData(image, 0, 0);
    canvas.addEventListener("mousemove", (event) => {
      const [j, i] = eventPixel(event, canvas);
      const f = entry.factor, span = (a) => (f > 1 ? `${a * f}-${a * f + f - 1}` : `${a}`);
      say(`${entry.unit} ${span(i)} → ${entry.unit} ${span(j)} · ${fmt(all[k * pn * pk + i * pk + j])}`,
          { value: all[k * pn * pk + i * pk + j] });
    });
    row.append(el("figure", { class: "panel" }, canvas,
      el("figcaption", { text: `${entry.caption}${label ? " · " + label : ""} · query ${entry.unit}s down, keys across` })));
  });
  into.append(row, colourBar(entry.cells.lo, entry.cells.hi, ""));
  AV.shown = { type: "heatmap", name: entry.name };
}

/* ---------------------------------------------------------------- channel weights */
function barChart(weights, caption, describe) {
  const W = 760, H = 240, left = 56, bottom = 28, top = 10;
  const n = weights.length;
  const byWeight = Array.from({ length: n }, (_, i) => i).sort((a, b) => weights[b] - weights[a] || a - b);
  const rank = new Int32Array(n);
  byWeight.forEach((c, r) => { rank[c] = r + 1; });
  const order = AV.state.sort === "sorted" ? byWeight : Array.from({ length: n }, (_, i) => i);
  const [vmin, vmax] = extent(weights);
  const lo = Math.min(0, vmin), hi = vmax > lo ? vmax : lo + 1;
  const canvas = el("canvas", { width: W, height: H, class: "chart" });
  const ctx = canvas.getContext("2d");
  const bw = (W - left - 8) / n, y = (v) => top + ((hi - v) * (H - top - bottom)) / (hi - lo);
  const paint = (active) => {
    ctx.fillStyle = "white"; ctx.fillRect(0, 0, W, H);
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
    ctx.fillText(fmt(hi), 2, top + 8); ctx.fillText(fmt(lo), 2, y(lo));
    ctx.fillText(AV.state.sort === "sorted" ? "channels, strongest first" : "channel index", left, H - 8);
    order.forEach((c, k) => {
      ctx.fillStyle = k === active ? "#d62728" : "#1f77b4";
      const y0 = y(Math.max(weights[c], lo)), y1 = y(lo);
      ctx.fillRect(left + k * bw, y0, Math.max(bw - (bw > 3 ? 1 : 0), 0.6), Math.max(y1 - y0, 1));
    });
  };
  paint(-1);
  canvas.addEventListener("mousemove", (event) => {
    const [px] = eventPixel(event, canvas);
    const k = Math.floor((px - left) / bw);
    if (k < 0 || k >= n) return;
    paint(k);
    const channel = order[k];
    say(`channel ${channel} · ${describe(channel)} · rank ${rank[channel]} of ${n}`,
        { channel, value: weights[channel] });
  });
  canvas.dataset.left = left; canvas.dataset.barWidth = bw;
  return el("figure", { class: "panel wide" }, canvas, el("figcaption", { text: caption }));
}

function stats(weights) {
  const n = weights.length;
  const mean = weights.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(weights.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  const [lo, hi] = extent(weights);
  return `${n} channels · mean ${fmt(mean)} · sd ${fmt(sd)} · min ${fmt(lo)} · max ${fmt(hi)}`;
}

function drawBars(entry, into) {
  const weights = values(entry.values);
  into.append(barChart(weights, entry.caption, (c) => `weight ${fmt(weights[c])}`),
    el("p", { class: "note", text: stats(weights) }));
  AV.shown = { type: "bars", name: entry.name, order: AV.state.sort };
}

function drawSelection(entry, into) {
  const all = values(entry.values);
  const [k, n] = entry.values.shape;
  const branch = Math.min(AV.state.branch, k - 1);
  const of = (b) => all.subarray(b * n, (b + 1) * n);
  const picker = el("select", { id: "branch", onchange: (e) => { AV.state.branch = Number(e.target.value); render(); } });
  entry.branches.forEach((name, b) => picker.append(el("option", { value: b, text: name })));
  picker.value = branch;
  const describe = (c) => entry.branches.map((name, b) => `${name} ${fmt(of(b)[c])}`).join(" · ");
  into.append(el("label", { class: "note" }, "branch ", picker),
    barChart(of(branch), `${entry.caption} · selection weight of ${entry.branches[branch]}`, describe),
    el("p", { class: "note", text: `${entry.branches.map((name, b) => `${name}: mean ${fmt(meanOf(of(b)))}`).join(" · ")}` }));
  AV.shown = { type: "selection", name: entry.name, branch };
}

function meanOf(v) { return v.reduce((a, b) => a + b, 0) / v.length; }
