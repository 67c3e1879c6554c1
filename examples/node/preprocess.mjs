// docs/preprocessing.md in plain JavaScript (no image library): decode an 8-bit PNG (node:zlib), turn it into RGB
// by the manifest's alpha rule, resize with Pillow's antialiased bicubic in fixed point, center crop / zero pad,
// rescale and normalize. Section numbers (§) are the doc's. JPEG decoding is not here: Node has no JPEG decoder
// built in, and only a libjpeg-turbo-based one (sharp) matches Pillow (docs/ports.md) — a host passes its decoded
// RGB to `fromDecoded`.
import { inflateSync } from "node:zlib";

const PNG_SIGNATURE = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }; // PNG colour type → samples per pixel

// §1: Pillow's integer alpha_composite over opaque white, per channel
export function compositeOnWhite(c, a) {
  if (a === 0) return 255;
  const t = 128 * (c * a + 255 * (255 - a)) + 16384;
  return (((t >> 8) + t) >> 8) >> 7;
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// Non-interlaced PNG (8-bit; palette and grey also 1, 2, 4-bit) → { width, height, rgb: Uint8Array (H·W·3) } by
// `alpha` (composite_on_white | drop_alpha)
export function decodePng(bytes, alpha) {
  if (!bytes.subarray(0, 8).equals(PNG_SIGNATURE)) throw new Error("not a PNG file");
  let width, height, depth, colorType, palette = null, trns = null;
  const idat = [];
  for (let at = 8; at < bytes.length;) {
    const length = bytes.readUInt32BE(at), type = bytes.toString("latin1", at + 4, at + 8);
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      [width, height, depth, colorType] = [data.readUInt32BE(0), data.readUInt32BE(4), data[8], data[9]];
      const packed = depth < 8 && (colorType === 0 || colorType === 3);
      if ((depth !== 8 && !packed) || data[12] !== 0) {
        throw new Error(`PNG bit depth ${depth}, colour type ${colorType}, interlace ${data[12]}: this decoder reads ` +
                        "non-interlaced 8-bit PNGs (and 1/2/4-bit grey or palette)");
      }
    } else if (type === "PLTE") palette = data;
    else if (type === "tRNS") trns = data;
    else if (type === "IDAT") idat.push(data);
    at += 12 + length;
  }
  const channels = CHANNELS[colorType];
  const raw = inflateSync(Buffer.concat(idat));
  const stride = Math.ceil((width * channels * depth) / 8), bpp = Math.max(1, (channels * depth) >> 3);
  const bytesOut = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) { // undo the per-row filters (PNG spec §9), byte-wise
    const filter = raw[y * (stride + 1)], row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const left = x >= bpp ? bytesOut[y * stride + x - bpp] : 0;
      const up = y > 0 ? bytesOut[(y - 1) * stride + x] : 0;
      const upLeft = y > 0 && x >= bpp ? bytesOut[(y - 1) * stride + x - bpp] : 0;
      const predictor = [0, left, up, (left + up) >> 1, paeth(left, up, upLeft)][filter];
      bytesOut[y * stride + x] = (row[x] + predictor) & 255;
    }
  }
  let pixels = bytesOut;
  if (depth < 8) { // unpack, most significant bits first; grey scales to 0–255 (a palette index does not)
    pixels = new Uint8Array(width * height);
    const scale = colorType === 0 ? 255 / ((1 << depth) - 1) : 1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const bit = x * depth, byte = bytesOut[y * stride + (bit >> 3)];
        pixels[y * width + x] = ((byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1)) * scale;
      }
    }
  }
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    let r, g, b, a = 255;
    const p = pixels.subarray(i * channels, (i + 1) * channels);
    if (colorType === 3) {
      [r, g, b] = palette.subarray(3 * p[0], 3 * p[0] + 3);
      if (trns && p[0] < trns.length) a = trns[p[0]]; // tRNS: one alpha per palette entry
    } else if (colorType === 0 || colorType === 4) {
      r = g = b = p[0];
      if (colorType === 4) a = p[1];
      else if (trns && trns.readUInt16BE(0) === p[0]) a = 0; // grey transparency key
    } else {
      [r, g, b] = p;
      if (colorType === 6) a = p[3];
      else if (trns && trns.readUInt16BE(0) === r && trns.readUInt16BE(2) === g && trns.readUInt16BE(4) === b) a = 0;
    }
    const composite = alpha === "composite_on_white";
    rgb.set(composite ? [compositeOnWhite(r, a), compositeOnWhite(g, a), compositeOnWhite(b, a)] : [r, g, b], 3 * i);
  }
  return { width, height, rgb };
}

// §2: the target (height, width)
export function resizeShape(h, w, shortest, longest, divisor) {
  const scale = shortest / Math.min(h, w);
  let [nh, nw] = h < w ? [shortest, scale * w] : [scale * h, shortest];
  if (Math.max(nh, nw) > longest) {
    const k = longest / Math.max(nh, nw);
    [nh, nw] = [k * nh, k * nw];
  }
  [nh, nw] = [Math.floor(nh + 0.5), Math.floor(nw + 0.5)];
  return [Math.max(divisor, Math.floor(nh / divisor) * divisor), Math.max(divisor, Math.floor(nw / divisor) * divisor)];
}

function cubic(x) { // §3: Keys, a = −0.5
  x = Math.abs(x);
  if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
  if (x < 2) return -0.5 * (((x - 5) * x + 8) * x - 4);
  return 0;
}

// §3: one pass of Pillow's bicubic along an axis: per output index, the first input index and fixed-point weights
function coefficients(inSize, outSize) {
  const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = 2 * filterscale;
  const inverse = 1 / filterscale, rows = [];
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - first;
    let weights = Array.from({ length: count }, (_, k) => cubic((k + first - center + 0.5) * inverse));
    const total = weights.reduce((s, v) => s + v, 0);
    if (total !== 0) weights = weights.map((v) => v / total);
    rows.push([first, weights.map((v) => Math.trunc(v >= 0 ? 0.5 + v * 4194304 : -0.5 + v * 4194304))]);
  }
  return rows;
}

// (h, w, 3) uint8 along `axis` (1: width, 0: height) → new size; integer accumulate (BigInt-free: sums < 2^53)
function pass(image, h, w, outSize, axis) {
  const [oh, ow] = axis === 1 ? [h, outSize] : [outSize, w];
  const out = new Uint8Array(oh * ow * 3);
  coefficients(axis === 1 ? w : h, outSize).forEach(([first, fixed], i) => {
    for (let j = 0; j < (axis === 1 ? h : w); j++) {
      for (let c = 0; c < 3; c++) {
        let acc = 2097152; // 2^21: rounding
        fixed.forEach((q, k) => {
          const [y, x] = axis === 1 ? [j, first + k] : [first + k, j];
          acc += q * image[(y * w + x) * 3 + c];
        });
        const [y, x] = axis === 1 ? [j, i] : [i, j];
        out[(y * ow + x) * 3 + c] = Math.min(255, Math.max(0, Math.floor(acc / 4194304))); // >> 22, floor
      }
    }
  });
  return out;
}

// §2–§6 from decoded RGB: { resized_rgb, cropped, pixel_values } as typed arrays in the goldens' layouts
export function fromDecoded(rgb, h, w, preprocessing) {
  const { resize, center_crop: crop, image_size: size } = preprocessing;
  if (resize.resample !== "bicubic") throw new Error(`resample ${resize.resample}: this example implements bicubic`);
  let [nh, nw] = [h, w], resized = rgb;
  if (resize.enabled) {
    [nh, nw] = resizeShape(h, w, resize.shortest_edge, resize.longest_edge, resize.size_divisor);
    if (nw !== w) resized = pass(resized, h, w, nw, 1);
    if (nh !== h) resized = pass(resized, h, nw, nh, 0);
  }
  const [ch, cw] = crop.enabled ? [size, size] : [nh, nw];
  const [canvasH, canvasW] = [Math.max(ch, nh), Math.max(cw, nw)]; // §4: zero pad, then crop
  const [padTop, padLeft] = [Math.ceil((canvasH - nh) / 2), Math.ceil((canvasW - nw) / 2)];
  const [top, left] = [Math.floor((canvasH - ch) / 2), Math.floor((canvasW - cw) / 2)];
  const cropped = new Uint8Array(3 * ch * cw), pixels = new Float32Array(3 * ch * cw);
  const factor = preprocessing.rescale_factor;
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(preprocessing.mean[c]), std = Math.fround(preprocessing.std[c]);
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) {
        const [sy, sx] = [y + top - padTop, x + left - padLeft];
        const v = sy >= 0 && sy < nh && sx >= 0 && sx < nw ? resized[(sy * nw + sx) * 3 + c] : 0;
        const k = (c * ch + y) * cw + x;
        cropped[k] = v;
        const scaled = Math.fround(v * factor); // §5: double product, rounded to float32
        pixels[k] = preprocessing.normalize ? Math.fround(Math.fround(scaled - mean) / std) : scaled; // §6
      }
    }
  }
  return { resized_rgb: resized, cropped, pixel_values: pixels };
}
