// ITM on a bt-toolkit export from Node, with only manifest.json, the .onnx files and the golden vectors:
// the golden pixel_values / input_ids / attention_mask go through vision_tower → text_tower → cross_modal (one image
// against every golden text: the golden image_index, all zeros, by the manifest's broadcast rule), and every graph
// output is compared with its golden tensor within the tolerance the manifest gives (mlm_logits at the <mask>
// positions; substitutes such as cross_modal_pooled against the goldens of the graph they replace). Then the golden
// input suite: each PNG decoded here (preprocess.mjs), each image resized, cropped and normalized here, every step
// compared. Exit 1 on any mismatch.
//
//   npm install --onnxruntime-node-install=skip      (skip: the CPU build is in the package; no CUDA download)
//   node verify_itm.mjs EXPORT_DIR
import { readFileSync } from "node:fs";
import { join } from "node:path";
import ort from "onnxruntime-node";

import { decodePng, fromDecoded } from "./preprocess.mjs";

const exportDir = process.argv[2];
if (!exportDir) {
  console.error("usage: node verify_itm.mjs EXPORT_DIR");
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(exportDir, "manifest.json"), "utf8"));
if (manifest.schema_version !== 4) throw new Error(`schema_version ${manifest.schema_version}; this example reads 4`);
if (!manifest.golden) throw new Error("this export has no golden vectors (exported with --no-validate?)");

const typed = { float32: Float32Array, int64: BigInt64Array, uint8: Uint8Array };
const readTensors = (entries) => Object.fromEntries(entries.map((t) => {
  const bytes = readFileSync(join(exportDir, t.file)); // little-endian, C order
  const data = new typed[t.dtype](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  if (data.length !== t.shape.reduce((a, b) => a * b, 1)) throw new Error(`${t.file}: size does not match its shape`);
  return [t.name, { ...t, data }];
}));
const golden = readTensors(manifest.golden.tensors);
const tensor = (name, shape) => new ort.Tensor(golden[name].dtype, golden[name].data, shape ?? golden[name].shape);

const files = manifest.variants.fp32.files;
const session = (graph) => ort.InferenceSession.create(join(exportDir, files[graph].file));
const [vision, text, cross] = await Promise.all(["vision_tower", "text_tower", "cross_modal"].map(session));

const pixels = golden.pixel_values.shape;
const outputs = {
  ...(await vision.run({ pixel_values: tensor("pixel_values", [1, ...pixels]) })),
  ...(await text.run({ input_ids: tensor("input_ids"), attention_mask: tensor("attention_mask") })),
};
const count = golden.input_ids.shape[0];
const crossFeeds = {
  text_bridge: outputs.text_bridge, image_bridge: outputs.image_bridge, attention_mask: tensor("attention_mask"),
  [manifest.wiring.broadcast.index_input]: tensor("image_index"),
};
Object.assign(outputs, await cross.run(crossFeeds));

let failed = 0;
const compare = (label, got, expected, sameShape = true) => {
  let worst = sameShape && got.length === expected.data.length ? 0 : Infinity;
  for (let i = 0; i < expected.data.length && i < got.length; i++) {
    worst = Math.max(worst, Math.abs(Number(got[i]) - Number(expected.data[i])));
  }
  const ok = worst <= expected.tolerance;
  failed += ok ? 0 : 1;
  console.log(`${ok ? "ok  " : "FAIL"} ${label.padEnd(34)} max |Δ| ${worst.toExponential(2)} (tolerance ${expected.tolerance})`);
};
for (const [name, value] of Object.entries(outputs)) {
  if (golden[name]) compare(name, value.data, golden[name]);
}
// mlm_logits (T, S, V) is shipped at the <mask> positions only, in (text, position) order
if (outputs.mlm_logits && golden.mlm_logits_at_mask) {
  const [, seq, vocab] = outputs.mlm_logits.dims, ids = golden.input_ids.data, rows = [];
  ids.forEach((id, k) => { if (id === BigInt(manifest.tokenizer.mask_token_id)) rows.push(k); });
  const atMask = new Float32Array(rows.length * vocab);
  rows.forEach((k, r) => atMask.set(outputs.mlm_logits.data.subarray(k * vocab, (k + 1) * vocab), r * vocab));
  compare("mlm_logits_at_mask", atMask, golden.mlm_logits_at_mask, rows.length * vocab === golden.mlm_logits_at_mask.data.length && seq > 0);
}
// head-specific graphs give the outputs of the graph they replace (wiring.substitutes), on the same feeds
for (const sub of manifest.wiring.substitutes ?? []) {
  const graph = await session(sub.graph);
  for (const [name, value] of Object.entries(await graph.run(crossFeeds))) {
    if (golden[name]) compare(`${sub.graph}:${name}`, value.data, golden[name]);
  }
}
const logits = outputs.itm_logits.data;
const probabilities = Array.from({ length: count }, (_, k) => 1 / (1 + Math.exp(logits[2 * k] - logits[2 * k + 1])));
if (golden.itm_probability) compare("itm_probability", probabilities, golden.itm_probability);
console.log("ITM probabilities (column 1 of itm_logits = match):", probabilities.map((p) => p.toFixed(6)).join(", "));

// The golden image and the golden input suite: decode (PNG here; JPEG needs a libjpeg-turbo decoder,
// docs/ports.md), then every step
const preprocessing = manifest.preprocessing;
if (preprocessing.exif_transpose) throw new Error("preprocessing.exif_transpose is true: this example does not rotate");
const mainImage = { name: "image", image: manifest.golden.image, tensors: manifest.golden.tensors
  .filter((t) => ["decoded_rgb", "resized_rgb", "cropped", "pixel_values"].includes(t.name)) };
for (const input of [mainImage, ...(manifest.golden.inputs ?? [])]) {
  const steps = readTensors(input.tensors), label = input === mainImage ? "" : `input:${input.name}:`;
  const [h, w] = steps.decoded_rgb.shape;
  let rgb = steps.decoded_rgb.data;
  if (input.image.file.endsWith(".png")) {
    const decoded = decodePng(readFileSync(join(exportDir, input.image.file)), preprocessing.alpha);
    compare(`${label}decoded_rgb`, decoded.rgb, steps.decoded_rgb, decoded.height === h && decoded.width === w);
    rgb = decoded.rgb;
  } else {
    console.log(`---- ${label}decoded_rgb`.padEnd(39), "not decoded here (JPEG: use a libjpeg-turbo decoder)");
  }
  const ours = fromDecoded(rgb, h, w, preprocessing);
  for (const step of ["resized_rgb", "cropped", "pixel_values"]) {
    compare(`${label}${step}`, ours[step], steps[step]);
  }
}
process.exit(failed ? 1 : 0);
