/* attnviz report, part 3: ASFF fusion levels with detections, and the controls that pick what is drawn.
   Needs core.js and views.js. */

const LEVEL_COLOURS = [[31, 119, 180], [255, 127, 14], [44, 160, 44]];

function drawAsff(entry, into) {
  const row = el("div", { class: "panels" });
  const heats = entry.planes.map((plane) => planeHeat(plane));
  entry.planes.forEach((plane, k) => {
    const panel = photoPanel(plane.caption);
    drawHeat(panel.ctx, heats[k].heat, 0, 1);
    hoverCells(panel.canvas, plane.grid[0], plane.grid[1], (i) => heats[k].cells[i], `weight of ${entry.sources[k]}`);
    row.append(panel.figure);
  });
  const dominant = photoPanel(`${entry.name} · dominant source level, with the detections`, true);
  drawPhoto(dominant.ctx);
  const image = dominant.ctx.getImageData(0, 0, DW, DH);
  for (let i = 0; i < DW * DH; i++) {
    if (Number.isNaN(heats[0].heat[i])) continue;
    let best = 0;
    heats.forEach((h, k) => { if (h.heat[i] > heats[best].heat[i]) best = k; });
    const a = AV.state.alpha;
    for (let c = 0; c < 3; c++) image.data[i * 4 + c] = (1 - a) * image.data[i * 4 + c] + a * LEVEL_COLOURS[best][c];
  }
  dominant.ctx.putImageData(image, 0, 0);
  drawBoxes(dominant.ctx, entry.level);
  const [h, w] = entry.planes[0].grid;
  dominant.canvas.addEventListener("mousemove", (event) => {
    const [X, Y] = pixelOf(...eventPixel(event, dominant.canvas));
    const cell = cellOf(X, Y, h, w);
    const box = (P.detections || []).find((d) => X >= d.box[0] && X < d.box[2] && Y >= d.box[1] && Y < d.box[3]);
    const weights = cell ? heats.map((q, k) => `${entry.sources[k]} ${fmt(q.cells[cell[0] * w + cell[1]])}`).join(" · ") : "not seen";
    const found = box ? ` · box ${box.name} ${box.score.toFixed(2)} (level ${box.level}; mean weights ${box.weights.map(fmt).join(" / ")})` : "";
    say(`pixel ${X},${Y} · ${weights}${found}`, { x: X, y: Y });
  });
  row.append(dominant.figure);
  const legend = el("p", { class: "note" });
  entry.sources.forEach((name, k) => legend.append(
    el("span", { class: "swatch", style: `background: rgb(${LEVEL_COLOURS[k].join(",")})` }), ` ${name}  `));
  into.append(row, legend, colourBar(0, 1, "level weights, one 0-1 scale"));
  AV.shown = { type: "asff", name: entry.name, boxes: (P.detections || []).length };
}

function drawBoxes(ctx, level) {
  const sx = DW / G.original[0], sy = DH / G.original[1];
  ctx.save();
  ctx.font = "12px sans-serif";
  for (const d of P.detections || []) {
    const [x0, y0, x1, y1] = d.box;
    ctx.lineWidth = d.level === level ? 3 : 1.5;
    ctx.strokeStyle = d.level === level ? "white" : "rgba(255,255,255,0.6)";
    ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    const label = `${d.name} ${d.score.toFixed(2)} L${d.level}`;
    ctx.fillStyle = "rgba(0,0,0,0.7)";
    ctx.fillRect(x0 * sx, Math.max(0, y0 * sy - 15), ctx.measureText(label).width + 6, 15);
    ctx.fillStyle = "white";
    ctx.fillText(label, x0 * sx + 3, Math.max(11, y0 * sy - 3));
  }
  ctx.restore();
}

/* ---------------------------------------------------------------- controls */
const DRAW = { plane: drawPlane, coordinate: drawCoordinate, rows: drawRows, crisscross: drawRows,
  heatmap: drawHeatmap, bars: drawBars, selection: drawSelection, asff: drawAsff };
const OVER_PHOTO = new Set(["plane", "coordinate", "rows", "crisscross", "asff"]);

AV.state = { stage: 0, block: 0, map: 0, cmap: P.cmap, alpha: P.alpha, grey: true, sort: "sorted", branch: 0, query: null };

function current() {
  const stage = P.stages[AV.state.stage];
  const block = stage.blocks[Math.min(AV.state.block, stage.blocks.length - 1)];
  return { stage, block, entry: block.maps[Math.min(AV.state.map, block.maps.length - 1)] };
}

function option(value, text) { return el("option", { value, text }); }

function controls() {
  const { stage, block, entry } = current();
  const tabs = document.getElementById("stages");
  tabs.replaceChildren(...P.stages.map((s, i) => el("button", {
    role: "tab", "aria-selected": String(i === AV.state.stage), text: s.title,
    onclick: () => { Object.assign(AV.state, { stage: i, block: s.blocks.length - 1, map: 0 }); render(); } })));
  const blocks = el("select", { id: "block", onchange: (e) => { AV.state.block = Number(e.target.value); AV.state.map = 0; render(); } });
  stage.blocks.forEach((b, i) => blocks.append(option(i, `${b.layer}${b.block ? " (" + b.block + ")" : ""}`)));
  blocks.value = stage.blocks.indexOf(block);
  const maps = el("select", { id: "map", onchange: (e) => { AV.state.map = Number(e.target.value); render(); } });
  block.maps.forEach((m, i) => maps.append(option(i, `${m.type === "bars" ? "channel weights" : m.type} · ${m.name}`)));
  maps.value = block.maps.indexOf(entry);
  const cmaps = el("select", { id: "cmap", onchange: (e) => { AV.state.cmap = e.target.value; render(); } });
  Object.keys(P.colormaps).forEach((name) => cmaps.append(option(name, name)));
  cmaps.value = AV.state.cmap;
  const alpha = el("input", { id: "alpha", type: "range", min: 0, max: 1, step: 0.05, value: AV.state.alpha,
    oninput: (e) => { AV.state.alpha = Number(e.target.value); render(); } });
  const grey = el("input", { id: "grey", type: "checkbox", onchange: (e) => { AV.state.grey = e.target.checked; render(); } });
  grey.checked = AV.state.grey;
  const items = [el("label", {}, "block ", blocks), el("label", {}, "map ", maps)];
  if (OVER_PHOTO.has(entry.type) || entry.type === "heatmap") items.push(el("label", {}, "colormap ", cmaps));
  if (OVER_PHOTO.has(entry.type)) items.push(el("label", {}, "opacity ", alpha), el("label", {}, grey, " photo in grey"));
  if (entry.type === "bars" || entry.type === "selection") {
    const sort = el("select", { id: "sort", onchange: (e) => { AV.state.sort = e.target.value; render(); } });
    sort.append(option("sorted", "sorted by weight"), option("channel", "channel order"));
    sort.value = AV.state.sort;
    items.push(el("label", {}, "bars ", sort));
  }
  document.getElementById("controls").replaceChildren(...items);
}

function render() {
  controls();
  const { stage, entry } = current();
  const panels = document.getElementById("panels");
  panels.replaceChildren();
  const main = el("div", { class: "main" });
  DRAW[entry.type](entry, main);
  panels.append(main);
  if (stage.cam) {
    const side = el("div", { class: "main" });
    const shown = AV.shown;
    drawPlane(stage.cam, side);
    AV.shown = shown;
    panels.append(side);
  }
}

AV.select = (stage, block, map) => { Object.assign(AV.state, { stage, block, map }); render(); };
AV.photoLoaded.then(() => {
  AV.state.block = P.stages.length ? P.stages[0].blocks.length - 1 : 0;
  if (P.stages.length) render();
  else document.getElementById("panels").textContent = "No attention map was captured for this image.";
  AV.ready = true;
});
