/* attnviz report, part 1: decoding the arrays, the geometry that puts a map on the photo, and drawing helpers.
   Plain JavaScript, no library, nothing fetched: everything comes from the JSON block in this file. */
"use strict";

const AV = (window.attnviz = { ready: false, shown: null });
AV.payload = JSON.parse(document.getElementById("attnviz-data").textContent);
const P = AV.payload;
const G = P.geometry;
const [DW, DH] = P.display;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/* ---------------------------------------------------------------- arrays (see attnviz/report/encode.py) */
function bytes(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function floats(b64) {
  const raw = bytes(b64);
  return new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
}

function values(enc) {
  if (enc._values) return enc._values;
  let out;
  if (enc.dtype === "f32") out = floats(enc.data);
  else {
    const codes = bytes(enc.data);
    const row = enc.shape.length ? enc.shape[enc.shape.length - 1] : 1;
    const perRow = typeof enc.lo === "string";
    const lo = perRow ? floats(enc.lo) : null;
    const hi = perRow ? floats(enc.hi) : null;
    out = new Float32Array(codes.length);
    for (let i = 0; i < codes.length; i++) {
      const r = perRow ? Math.floor(i / row) : 0;
      const l = perRow ? lo[r] : enc.lo;
      const h = perRow ? hi[r] : enc.hi;
      out[i] = l + (codes[i] * (h - l)) / 255;
    }
  }
  Object.defineProperty(enc, "_values", { value: out });
  return out;
}

function extent(vals) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of vals) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  return lo <= hi ? [lo, hi] : [0, 0];
}

/* ---------------------------------------------------------------- geometry (as attnviz.images.map_to_original) */
function firstCentre(span, cells) {
  return G.placement === "aligned" ? 0.5 : span / cells / 2;
}

const axisCache = new Map();
function axisWeights(a, cells, count) {
  const key = `${a}:${cells}:${count}`;
  if (axisCache.has(key)) return axisCache.get(key);
  const span = G.input[a];
  const first = firstCentre(span, cells);
  const w = { low: new Int32Array(count), high: new Int32Array(count), frac: new Float64Array(count), seen: new Uint8Array(count) };
  for (let i = 0; i < count; i++) {
    const centre = ((i + 0.5) * G.resized[a]) / count + G.offset[a];
    w.seen[i] = centre >= 0 && centre < span ? 1 : 0;
    const pos = Math.min(Math.max(((centre - first) * cells) / span, 0), cells - 1);
    w.low[i] = Math.floor(pos);
    w.high[i] = Math.min(w.low[i] + 1, cells - 1);
    w.frac[i] = pos - w.low[i];
  }
  axisCache.set(key, w);
  return w;
}

/* A map of h x w cells on the display's pixels: bilinear between cell centres, NaN where the model saw nothing. */
function resample(cells, h, w) {
  const rows = axisWeights(1, h, DH);
  const cols = axisWeights(0, w, DW);
  const out = new Float32Array(DW * DH);
  for (let y = 0; y < DH; y++) {
    const r0 = rows.low[y] * w, r1 = rows.high[y] * w, fy = rows.frac[y];
    for (let x = 0; x < DW; x++) {
      if (!rows.seen[y] || !cols.seen[x]) { out[y * DW + x] = NaN; continue; }
      const c0 = cols.low[x], c1 = cols.high[x], fx = cols.frac[x];
      const top = (1 - fx) * cells[r0 + c0] + fx * cells[r0 + c1];
      const bottom = (1 - fx) * cells[r1 + c0] + fx * cells[r1 + c1];
      out[y * DW + x] = (1 - fy) * top + fy * bottom;
    }
  }
  return out;
}

/* The original pixel under display pixel (px, py). */
function pixelOf(px, py) {
  return [Math.min(G.original[0] - 1, Math.floor(((px + 0.5) * G.original[0]) / DW)),
          Math.min(G.original[1] - 1, Math.floor(((py + 0.5) * G.original[1]) / DH))];
}

/* The [row, col] of the h x w cell nearest the centre of original pixel (X, Y); null where the model saw nothing
   (as attnviz.images.original_to_cell). */
function cellOf(X, Y, h, w) {
  const u = ((X + 0.5) * G.resized[0]) / G.original[0] + G.offset[0];
  const v = ((Y + 0.5) * G.resized[1]) / G.original[1] + G.offset[1];
  if (!(u >= 0 && u < G.input[0] && v >= 0 && v < G.input[1])) return null;
  const nearest = (pos, span, n) => Math.min(n - 1, Math.max(0, Math.floor(((pos - firstCentre(span, n)) * n) / span + 0.5)));
  return [nearest(v, G.input[1], h), nearest(u, G.input[0], w)];
}

/* Display coordinates of the centre of cell (row, col) of an h x w grid. */
function cellCentre(row, col, h, w) {
  const u = firstCentre(G.input[0], w) + (col * G.input[0]) / w;
  const v = firstCentre(G.input[1], h) + (row * G.input[1]) / h;
  return [((u - G.offset[0]) * DW) / G.resized[0], ((v - G.offset[1]) * DH) / G.resized[1]];
}

/* ---------------------------------------------------------------- drawing */
const lutCache = new Map();
function lut(name) {
  if (!lutCache.has(name)) lutCache.set(name, bytes(P.colormaps[name]));
  return lutCache.get(name);
}

const photo = new Image();
AV.photoLoaded = new Promise((resolve) => { photo.onload = resolve; });
photo.src = P.photo;

function fmt(v) {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a < 1e-12) return "0";  // a softmax's far tail: 1e-38 reads as noise, not as information
  return a < 0.01 || a >= 1e4 ? v.toExponential(3) : v.toFixed(4);
}

/* A figure with a canvas of the photo's display size, a caption, and a hover line of its own. */
function photoPanel(caption, readBack) {
  const canvas = el("canvas", { width: DW, height: DH, class: "photo" });
  const figure = el("figure", { class: "panel" }, canvas, el("figcaption", { text: caption }));
  return { figure, canvas, ctx: canvas.getContext("2d", { willReadFrequently: Boolean(readBack) }) };
}

function drawPhoto(ctx) {
  ctx.save();
  ctx.filter = AV.state.grey ? "grayscale(1)" : "none";
  ctx.drawImage(photo, 0, 0, DW, DH);
  ctx.restore();
}

/* Values apart by under FLAT_RANGE of their size are float noise: drawn in one colour (as attnviz.render does). */
function isFlat(lo, hi) {
  return hi - lo <= P.flatRange * Math.max(Math.abs(lo), Math.abs(hi));
}

/* `heat` (DW x DH, NaN unseen) in the colormap over [lo, hi], at the chosen opacity over the photo. */
function drawHeat(ctx, heat, lo, hi) {
  drawPhoto(ctx);
  const off = document.createElement("canvas");
  off.width = DW; off.height = DH;
  const octx = off.getContext("2d");
  const image = octx.createImageData(DW, DH);
  const colours = lut(AV.state.cmap);
  const span = hi > lo ? hi - lo : 1;
  const flat = isFlat(lo, hi);
  for (let i = 0; i < heat.length; i++) {
    const v = heat[i];
    if (Number.isNaN(v)) { image.data.set([128, 128, 128, 255], i * 4); continue; }
    const k = flat ? 381 : Math.round(Math.min(Math.max((v - lo) / span, 0), 1) * 255) * 3;
    image.data.set([colours[k], colours[k + 1], colours[k + 2], 255], i * 4);
  }
  octx.putImageData(image, 0, 0);
  ctx.save();
  ctx.globalAlpha = AV.state.alpha;
  ctx.drawImage(off, 0, 0);
  ctx.restore();
}

function colourBar(lo, hi, label) {
  const canvas = el("canvas", { width: 256, height: 12, class: "bar" });
  const ctx = canvas.getContext("2d");
  const colours = lut(AV.state.cmap);
  for (let i = 0; i < 256; i++) {
    ctx.fillStyle = `rgb(${colours[i * 3]},${colours[i * 3 + 1]},${colours[i * 3 + 2]})`;
    ctx.fillRect(i, 0, 1, 12);
  }
  if (isFlat(lo, hi)) return el("div", { class: "colourbar" }, el("span", { text: `flat ${fmt(lo)} (drawn in one colour)` }));
  return el("div", { class: "colourbar" }, el("span", { text: fmt(lo) }), canvas, el("span", { text: fmt(hi) }),
    el("span", { class: "dim", text: label || "" }));
}

function marker(ctx, x, y, colour) {
  ctx.save();
  ctx.lineWidth = 3; ctx.strokeStyle = "black";
  ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
  ctx.lineWidth = 1.5; ctx.strokeStyle = colour || "white";
  ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.stroke();
  ctx.restore();
}

/* The display pixel under a mouse event on a canvas (which CSS may have scaled). */
function eventPixel(event, canvas) {
  const rect = canvas.getBoundingClientRect();
  const px = Math.floor(((event.clientX - rect.left) * canvas.width) / rect.width);
  const py = Math.floor(((event.clientY - rect.top) * canvas.height) / rect.height);
  return [Math.min(canvas.width - 1, Math.max(0, px)), Math.min(canvas.height - 1, Math.max(0, py))];
}

function say(text, data) {
  const line = document.getElementById("readout");
  line.textContent = text;
  for (const key of Object.keys(line.dataset)) delete line.dataset[key];
  Object.assign(line.dataset, data || {});
}
