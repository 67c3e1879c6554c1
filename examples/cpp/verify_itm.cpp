// ITM on a bt-toolkit export from C++, with only manifest.json, the .onnx files and the golden vectors (the same
// check as examples/node/verify_itm.mjs): the golden pixel_values / input_ids / attention_mask go through
// vision_tower → text_tower → cross_modal, each cross-modal input fed as the manifest's `wiring` says, the broadcast
// input (`image_index`) the golden one (all zeros: one image against every golden text). Every graph output that has
// a golden tensor (mlm_logits at the <mask> positions), the substitutes (cross_modal_pooled) against the goldens of
// the graph they replace, and the ITM probability are compared within the manifest's tolerance. Then the golden
// image and the golden input suite go through preprocess.hpp (libpng / libjpeg-turbo decoding, alpha, resize,
// crop, normalize), every step compared. Exit 0: all match; 1: mismatch; 2: usage or an export this program cannot
// read.
//
//   ./build.sh                      (prints the binary's path)
//   build/verify_itm EXPORT_DIR [VARIANT]     (VARIANT: fp32 by default; golden tolerances are fp32's)
//   BT_EXAMPLE_FAST_JPEG=1 build/verify_itm EXPORT_DIR   (a JPEG decoder that differs from Pillow's: must FAIL)
#include <onnxruntime_cxx_api.h>

#include <nlohmann/json.hpp>

#include "preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

constexpr int kSchemaVersion = 4;

// A host tensor: dtype name as the manifest spells it, shape, raw little-endian C-order bytes.
struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

struct DType {
  ONNXTensorElementDataType onnx;
  size_t size;
};

DType dtype_of(const std::string& name) {
  static const std::map<std::string, DType> known = {
      {"float32", {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4}},
      {"float16", {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, 2}},
      {"int64", {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 8}},
      {"uint8", {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1}}};
  auto found = known.find(name);
  if (found == known.end()) throw std::runtime_error("unsupported dtype " + name);
  return found->second;
}

std::string dtype_name(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    default: throw std::runtime_error("unsupported output element type " + std::to_string(type));
  }
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Little-endian host assumed (x86-64, arm64); the golden files are little-endian.
std::vector<double> as_doubles(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(element_count(t.shape)));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == "float32") out[i] = reinterpret_cast<const float*>(t.bytes.data())[i];
    else if (t.dtype == "int64") out[i] = static_cast<double>(reinterpret_cast<const int64_t*>(t.bytes.data())[i]);
    else if (t.dtype == "uint8") out[i] = reinterpret_cast<const uint8_t*>(t.bytes.data())[i];
    else throw std::runtime_error("cannot compare dtype " + t.dtype);
  }
  return out;
}

class Graph {
 public:
  Graph(Ort::Env& env, const std::string& path, const json& io) : session_(env, path.c_str(), Ort::SessionOptions{}) {
    for (const auto& t : io.at("inputs")) inputs_.push_back(t.at("name").get<std::string>());
    for (const auto& t : io.at("outputs")) outputs_.push_back(t.at("name").get<std::string>());
  }

  const std::vector<std::string>& inputs() const { return inputs_; }

  std::map<std::string, Tensor> run(std::map<std::string, Tensor>& feeds) {
    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    std::vector<const char*> in_names, out_names;
    for (const auto& name : inputs_) {
      Tensor& t = feeds.at(name);
      values.push_back(Ort::Value::CreateTensor(cpu, t.bytes.data(), t.bytes.size(), t.shape.data(), t.shape.size(),
                                                dtype_of(t.dtype).onnx));
      in_names.push_back(name.c_str());
    }
    for (const auto& name : outputs_) out_names.push_back(name.c_str());
    auto results = session_.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(),
                                out_names.data(), out_names.size());
    std::map<std::string, Tensor> out;
    for (size_t k = 0; k < results.size(); ++k) {
      auto info = results[k].GetTensorTypeAndShapeInfo();
      Tensor t{dtype_name(info.GetElementType()), info.GetShape(), {}};
      const char* data = results[k].GetTensorData<char>();
      t.bytes.assign(data, data + element_count(t.shape) * dtype_of(t.dtype).size);
      out.emplace(outputs_[k], std::move(t));
    }
    return out;
  }

 private:
  Ort::Session session_;
  std::vector<std::string> inputs_, outputs_;
};

int verify(const std::string& dir, const std::string& variant) {
  const json manifest = json::parse(read_file(dir + "/manifest.json"));
  if (manifest.value("schema_version", 0) != kSchemaVersion) {
    std::fprintf(stderr, "%s: schema_version %s; this example reads %d\n", dir.c_str(),
                 manifest.value("schema_version", json()).dump().c_str(), kSchemaVersion);
    return 2;
  }
  if (manifest.value("golden", json()).is_null()) {
    std::fprintf(stderr, "%s has no golden vectors (exported with --no-validate?)\n", dir.c_str());
    return 2;
  }
  if (!manifest.at("variants").contains(variant)) {
    std::fprintf(stderr, "%s has no variant %s (variants: %s)\n", dir.c_str(), variant.c_str(),
                 manifest.at("variants").dump().substr(0, 200).c_str());
    return 2;
  }

  std::map<std::string, Tensor> golden;
  std::map<std::string, double> tolerance;
  auto load = [&](const json& entries, const std::string& label) {
    for (const auto& entry : entries) {
      Tensor t{entry.at("dtype"), entry.at("shape").get<std::vector<int64_t>>(),
               read_file(dir + "/" + entry.at("file").get<std::string>())};
      if (static_cast<int64_t>(t.bytes.size()) != element_count(t.shape) * static_cast<int64_t>(dtype_of(t.dtype).size))
        throw std::runtime_error(entry.at("file").get<std::string>() + ": size does not match dtype and shape");
      tolerance[label + entry.at("name").get<std::string>()] = entry.at("tolerance").get<double>();
      golden.emplace(label + entry.at("name").get<std::string>(), std::move(t));
    }
  };
  load(manifest.at("golden").at("tensors"), "");
  for (const auto& input : manifest.at("golden").value("inputs", json::array())) {
    load(input.at("tensors"), "input:" + input.at("name").get<std::string>() + ":");
  }

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "bt-verify-itm");
  const json& files = manifest.at("variants").at(variant).at("files");
  auto open = [&](const std::string& graph) {
    return Graph(env, dir + "/" + files.at(graph).at("file").get<std::string>(), manifest.at("graphs").at(graph));
  };
  Graph vision = open("vision_tower"), text = open("text_tower"), cross = open("cross_modal");

  // values[graph][tensor]: every input fed to and output read from each graph, for the wiring to pick from
  std::map<std::string, std::map<std::string, Tensor>> inputs, outputs;
  Tensor pixels = golden.at("pixel_values");
  pixels.shape.insert(pixels.shape.begin(), 1);  // golden pixel_values is one image (3, S, S); batch of 1
  inputs["vision_tower"]["pixel_values"] = pixels;
  inputs["text_tower"]["input_ids"] = golden.at("input_ids");
  inputs["text_tower"]["attention_mask"] = golden.at("attention_mask");
  outputs["vision_tower"] = vision.run(inputs["vision_tower"]);
  outputs["text_tower"] = text.run(inputs["text_tower"]);

  const json& wiring = manifest.at("wiring");
  for (const auto& wire : wiring.at("wires")) {
    if (wire.at("graph") != "cross_modal") continue;
    const auto& from = wire.at("source_kind") == "output" ? outputs : inputs;
    inputs["cross_modal"][wire.at("input")] = from.at(wire.at("source_graph")).at(wire.at("source"));
  }
  const json& broadcast = wiring.at("broadcast");
  const int64_t texts = golden.at("input_ids").shape.at(0);
  inputs["cross_modal"][broadcast.at("index_input")] = golden.at("image_index");  // all zeros: one image
  for (const auto& name : cross.inputs()) {
    if (!inputs["cross_modal"].count(name)) {
      std::fprintf(stderr, "manifest.wiring says nothing that feeds cross_modal input %s\n", name.c_str());
      return 2;
    }
  }
  outputs["cross_modal"] = cross.run(inputs["cross_modal"]);

  int failed = 0;
  auto compare = [&](const std::string& name, const std::vector<double>& got, const std::vector<int64_t>& shape,
                     const std::string& label = "") {
    const Tensor& expected = golden.at(name);
    const std::vector<double> want = as_doubles(expected);
    double worst = shape == expected.shape ? 0.0 : INFINITY;
    for (size_t i = 0; i < want.size() && i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
    const bool ok = std::isfinite(worst) && worst <= tolerance.at(name);
    failed += ok ? 0 : 1;
    std::printf("%s %-36s max |d| %.2e (tolerance %g)\n", ok ? "ok  " : "FAIL", (label.empty() ? name : label).c_str(),
                worst, tolerance.at(name));
  };
  for (const auto& graph : {"vision_tower", "text_tower", "cross_modal"}) {
    for (const auto& [name, tensor] : outputs[graph]) {
      if (golden.count(name)) compare(name, as_doubles(tensor), tensor.shape);
    }
  }
  // mlm_logits (T, S, V) is shipped at the <mask> positions only, in (text, position) order
  if (outputs["cross_modal"].count("mlm_logits") && golden.count("mlm_logits_at_mask")) {
    const Tensor& mlm = outputs["cross_modal"].at("mlm_logits");
    const int64_t vocab = mlm.shape.at(2), mask_id = manifest.at("tokenizer").at("mask_token_id").get<int64_t>();
    const std::vector<double> logits = as_doubles(mlm), ids = as_doubles(golden.at("input_ids"));
    std::vector<double> at_mask;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (static_cast<int64_t>(ids[k]) == mask_id) at_mask.insert(at_mask.end(), &logits[k * vocab], &logits[(k + 1) * vocab]);
    }
    compare("mlm_logits_at_mask", at_mask, {static_cast<int64_t>(at_mask.size()) / vocab, vocab});
  }
  // head-specific graphs give the outputs of the graph they replace (wiring.substitutes), on the same feeds
  for (const auto& sub : wiring.value("substitutes", json::array())) {
    const std::string name = sub.at("graph");
    Graph graph = open(name);
    for (const auto& [output, tensor] : graph.run(inputs["cross_modal"])) {
      if (golden.count(output)) compare(output, as_doubles(tensor), tensor.shape, name + ":" + output);
    }
  }
  // column 1 of itm_logits is the match (manifest.wiring.outputs.itm_logits): softmax → probability
  if (outputs["cross_modal"].count("itm_logits") && golden.count("itm_probability")) {
    const std::vector<double> logits = as_doubles(outputs["cross_modal"].at("itm_logits"));
    std::vector<double> probability(static_cast<size_t>(texts));
    std::printf("ITM probabilities:");
    for (int64_t k = 0; k < texts; ++k) {
      probability[k] = 1.0 / (1.0 + std::exp(logits[2 * k] - logits[2 * k + 1]));
      std::printf(" %.6f", probability[k]);
    }
    std::printf("\n");
    compare("itm_probability", probability, {texts});
  }

  // The golden image and the golden input suite: decode, then every preprocessing step (docs/preprocessing.md)
  const json& pre = manifest.at("preprocessing");
  // BT_EXAMPLE_FAST_JPEG=1 decodes JPEGs as a faster, different decoder would (libjpeg's fast IDCT, no fancy
  // upsampling): the JPEG goldens must then fail (tests/examples/test_cpp.py)
  const char* fast_env = std::getenv("BT_EXAMPLE_FAST_JPEG");
  const bool fast_jpeg = fast_env != nullptr && std::string(fast_env) == "1";
  if (pre.at("exif_transpose").get<bool>()) throw std::runtime_error("exif_transpose is true: this example does not rotate");
  if (pre.at("resize").at("resample") != "bicubic") throw std::runtime_error("this example implements bicubic only");
  bt::Preprocessing p;
  p.resize = pre.at("resize").at("enabled");
  p.crop = pre.at("center_crop").at("enabled");
  p.normalize = pre.at("normalize");
  p.image_size = pre.at("image_size");
  p.shortest_edge = pre.at("resize").at("shortest_edge");
  p.longest_edge = pre.at("resize").at("longest_edge");
  p.size_divisor = pre.at("resize").at("size_divisor");
  p.rescale_factor = pre.at("rescale_factor");
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = pre.at("mean").at(c).get<float>();
    p.std[c] = pre.at("std").at(c).get<float>();
  }
  std::vector<std::pair<std::string, std::string>> images = {{"", manifest.at("golden").at("image").at("file")}};
  for (const auto& input : manifest.at("golden").value("inputs", json::array())) {
    images.emplace_back("input:" + input.at("name").get<std::string>() + ":", input.at("image").at("file"));
  }
  for (const auto& [label, file] : images) {
    const std::vector<char> bytes = read_file(dir + "/" + file);
    const bool png = file.size() > 4 && file.substr(file.size() - 4) == ".png";
    const bt::Rgb decoded = png ? bt::decode_png(bytes, pre.at("alpha")) : bt::decode_jpeg(bytes, fast_jpeg);
    const bt::Steps steps = bt::preprocess(decoded, p);
    auto shape_of = [](const bt::Rgb& rgb) { return std::vector<int64_t>{rgb.height, rgb.width, 3}; };
    const std::vector<int64_t> chw = {3, p.crop ? p.image_size : steps.resized.height,
                                      p.crop ? p.image_size : steps.resized.width};
    compare(label + "decoded_rgb", {decoded.pixels.begin(), decoded.pixels.end()}, shape_of(decoded));
    compare(label + "resized_rgb", {steps.resized.pixels.begin(), steps.resized.pixels.end()}, shape_of(steps.resized));
    compare(label + "cropped", {steps.cropped.begin(), steps.cropped.end()}, chw);
    compare(label + "pixel_values", {steps.pixel_values.begin(), steps.pixel_values.end()}, chw);
  }
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s EXPORT_DIR [VARIANT]\n", argv[0]);
    return 2;
  }
  try {
    return verify(argv[1], argc == 3 ? argv[2] : "fp32");
  } catch (const Ort::Exception& e) {
    std::fprintf(stderr, "ONNX Runtime: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
