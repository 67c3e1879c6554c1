// ITM on a bt-toolkit export from Node, with only manifest.json, the .onnx files and the golden vectors:
// the golden pixel_values / input_ids / attention_mask go through vision_tower → text_tower → cross_modal (one image
// against every golden text: image_index all zeros, the manifest's broadcast rule), and every graph output is
// compared with its golden tensor within the tolerance the manifest gives. Exit 1 on any mismatch.
//
//   npm install --onnxruntime-node-install=skip      (skip: the CPU build is in the package; no CUDA download)
//   node verify_itm.mjs EXPORT_DIR
import { readFileSync } from "node:fs";
import { join } from "node:path";
import ort from "onnxruntime-node";

const exportDir = process.argv[2];
if (!exportDir) {
  console.error("usage: node verify_itm.mjs EXPORT_DIR");
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(exportDir, "manifest.json"), "utf8"));
if (manifest.schema_version !== 4) throw new Error(`schema_version ${manifest.schema_version}; this example reads 4`);
if (!manifest.golden) throw new Error("this export has no golden vectors (exported with --no-validate?)");

const typed = { float32: Float32Array, int64: BigInt64Array, uint8: Uint8Array };
const golden = Object.fromEntries(manifest.golden.tensors.map((t) => {
  const bytes = readFileSync(join(exportDir, t.file)); // little-endian, C order
  const data = new typed[t.dtype](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return [t.name, { ...t, data }];
}));
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
Object.assign(outputs, await cross.run({
  text_bridge: outputs.text_bridge, image_bridge: outputs.image_bridge, attention_mask: tensor("attention_mask"),
  image_index: new ort.Tensor("int64", new BigInt64Array(count), [count]),
}));

let failed = 0;
for (const [name, value] of Object.entries(outputs)) {
  const expected = golden[name];
  if (!expected) continue; // mlm_logits is not shipped (its task output fill_mask_top5 is)
  let worst = 0;
  for (let i = 0; i < expected.data.length; i++) worst = Math.max(worst, Math.abs(value.data[i] - expected.data[i]));
  const ok = value.data.length === expected.data.length && worst <= expected.tolerance;
  failed += ok ? 0 : 1;
  console.log(`${ok ? "ok  " : "FAIL"} ${name.padEnd(14)} max |Δ| ${worst.toExponential(2)} (tolerance ${expected.tolerance})`);
}
const logits = outputs.itm_logits.data;
const probabilities = Array.from({ length: count }, (_, k) => 1 / (1 + Math.exp(logits[2 * k] - logits[2 * k + 1])));
console.log("ITM probabilities (column 1 of itm_logits = match):", probabilities.map((p) => p.toFixed(6)).join(", "));
process.exit(failed ? 1 : 0);
