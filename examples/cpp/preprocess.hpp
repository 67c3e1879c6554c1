// docs/preprocessing.md in C++: decode with libpng and libjpeg-turbo (the JPEG library Pillow uses, so JPEG pixels
// match; docs/ports.md), turn the image into RGB by the manifest's alpha rule, resize with Pillow's antialiased
// bicubic in fixed point, center crop / zero pad, rescale and normalize. Section numbers (§) are the doc's.
#pragma once

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bt {

struct Rgb {  // (height, width, 3) uint8, row-major
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;
};

// §1: Pillow's integer alpha_composite over opaque white, per channel
inline uint8_t composite_on_white(int c, int a) {
  if (a == 0) return 255;
  const int64_t t = 128 * (static_cast<int64_t>(c) * a + 255 * (255 - a)) + 16384;
  return static_cast<uint8_t>((((t >> 8) + t) >> 8) >> 7);
}

// Any PNG libpng reads, as RGBA (palette + tRNS and grey expanded by libpng's simplified API), then §1's rule.
inline Rgb decode_png(const std::vector<char>& bytes, const std::string& alpha) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) throw std::runtime_error(image.message);
  image.format = PNG_FORMAT_RGBA;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgba.data(), 0, nullptr)) throw std::runtime_error(image.message);
  Rgb out{static_cast<int>(image.height), static_cast<int>(image.width), {}};
  out.pixels.resize(static_cast<size_t>(out.height) * out.width * 3);
  const bool composite = alpha == "composite_on_white";
  for (size_t i = 0; i < static_cast<size_t>(out.height) * out.width; ++i) {
    for (int c = 0; c < 3; ++c) {
      out.pixels[3 * i + c] = composite ? composite_on_white(rgba[4 * i + c], rgba[4 * i + 3]) : rgba[4 * i + c];
    }
  }
  return out;
}

struct JpegErrorManager {
  jpeg_error_mgr base;
  char message[JMSG_LENGTH_MAX];
};

// libjpeg-turbo with its defaults (accurate integer IDCT, fancy upsampling), as Pillow decodes. A CMYK JPEG is
// inverted first (Pillow assumes Adobe's convention for every CMYK JPEG), then §1's CMYK formula. `fast`: the fast
// integer IDCT without fancy upsampling, a decoder that does NOT match (to see the JPEG goldens catch it).
inline Rgb decode_jpeg(const std::vector<char>& bytes, bool fast = false) {
  jpeg_decompress_struct info{};
  JpegErrorManager error{};
  info.err = jpeg_std_error(&error.base);
  error.base.error_exit = [](j_common_ptr common) {
    (*common->err->format_message)(common, reinterpret_cast<JpegErrorManager*>(common->err)->message);
    throw std::runtime_error(std::string("libjpeg: ") + reinterpret_cast<JpegErrorManager*>(common->err)->message);
  };
  Rgb out;
  try {
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    jpeg_read_header(&info, TRUE);
    const bool cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
    info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    if (fast) {
      info.dct_method = JDCT_IFAST;
      info.do_fancy_upsampling = FALSE;
    }
    jpeg_start_decompress(&info);
    out.height = static_cast<int>(info.output_height);
    out.width = static_cast<int>(info.output_width);
    const int channels = info.output_components;
    std::vector<uint8_t> row(static_cast<size_t>(out.width) * channels);
    out.pixels.resize(static_cast<size_t>(out.height) * out.width * 3);
    while (info.output_scanline < info.output_height) {
      const size_t y = info.output_scanline;
      JSAMPROW rows[1] = {row.data()};
      jpeg_read_scanlines(&info, rows, 1);
      for (int x = 0; x < out.width; ++x) {
        uint8_t* px = &out.pixels[(y * out.width + x) * 3];
        if (!cmyk) {
          std::copy_n(&row[static_cast<size_t>(x) * 3], 3, px);
          continue;
        }
        const int n = 255 - (255 - row[x * 4 + 3]);  // n = 255 − K, K = 255 − stored sample (inverted)
        for (int c = 0; c < 3; ++c) {
          const int64_t t = static_cast<int64_t>(255 - row[x * 4 + c]) * n + 128;  // C = 255 − stored sample
          px[c] = static_cast<uint8_t>(n - (((t >> 8) + t) >> 8));
        }
      }
    }
    jpeg_finish_decompress(&info);
  } catch (...) {
    jpeg_destroy_decompress(&info);
    throw;
  }
  jpeg_destroy_decompress(&info);
  return out;
}

// §2: the target (height, width)
inline std::pair<int, int> resize_shape(int h, int w, int shortest, int longest, int divisor) {
  const double scale = static_cast<double>(shortest) / std::min(h, w);
  double nh = h < w ? shortest : scale * h, nw = h < w ? scale * w : shortest;
  if (std::max(nh, nw) > longest) {
    const double k = longest / std::max(nh, nw);
    nh *= k;
    nw *= k;
  }
  const int ih = static_cast<int>(std::floor(nh + 0.5)), iw = static_cast<int>(std::floor(nw + 0.5));
  return {std::max(divisor, ih / divisor * divisor), std::max(divisor, iw / divisor * divisor)};
}

inline double cubic(double x) {  // §3: Keys, a = −0.5
  x = std::fabs(x);
  if (x < 1.0) return (1.5 * x - 2.5) * x * x + 1.0;
  if (x < 2.0) return -0.5 * (((x - 5.0) * x + 8.0) * x - 4.0);
  return 0.0;
}

// §3: one pass along `axis` (1: width, 0: height) of Pillow's bicubic, fixed point with 22 fraction bits
inline Rgb resize_pass(const Rgb& in, int out_size, int axis) {
  const int in_size = axis == 1 ? in.width : in.height;
  Rgb out{axis == 1 ? in.height : out_size, axis == 1 ? out_size : in.width, {}};
  out.pixels.resize(static_cast<size_t>(out.height) * out.width * 3);
  const double scale = static_cast<double>(in_size) / out_size, filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale, inverse = 1.0 / filterscale;
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const int first = std::max(static_cast<int>(center - support + 0.5), 0);
    const int count = std::min(static_cast<int>(center + support + 0.5), in_size) - first;
    std::vector<double> weights(count);
    double total = 0.0;
    for (int k = 0; k < count; ++k) total += weights[k] = cubic((k + first - center + 0.5) * inverse);
    std::vector<int64_t> fixed(count);
    for (int k = 0; k < count; ++k) {
      const double w = total != 0.0 ? weights[k] / total : weights[k];
      fixed[k] = static_cast<int64_t>(w < 0 ? -0.5 + w * (1 << 22) : 0.5 + w * (1 << 22));
    }
    const int across = axis == 1 ? in.height : in.width;
    for (int j = 0; j < across; ++j) {
      for (int c = 0; c < 3; ++c) {
        int64_t acc = 1 << 21;
        for (int k = 0; k < count; ++k) {
          const int y = axis == 1 ? j : first + k, x = axis == 1 ? first + k : j;
          acc += fixed[k] * in.pixels[(static_cast<size_t>(y) * in.width + x) * 3 + c];
        }
        const int64_t shifted = acc >= 0 ? acc >> 22 : -((-acc + (1 << 22) - 1) >> 22);  // floor division
        const int y = axis == 1 ? j : i, x = axis == 1 ? i : j;
        out.pixels[(static_cast<size_t>(y) * out.width + x) * 3 + c] =
            static_cast<uint8_t>(std::clamp<int64_t>(shifted, 0, 255));
      }
    }
  }
  return out;
}

struct Steps {
  Rgb resized;
  std::vector<uint8_t> cropped;     // (3, S, S)
  std::vector<float> pixel_values;  // (3, S, S)
};

struct Preprocessing {
  bool resize = true, crop = true, normalize = true;
  int image_size = 0, shortest_edge = 0, longest_edge = 0, size_divisor = 1;
  double rescale_factor = 1.0;
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};

// §2–§6 from decoded RGB
inline Steps preprocess(const Rgb& decoded, const Preprocessing& p) {
  Steps steps{decoded, {}, {}};
  if (p.resize) {
    auto [nh, nw] = resize_shape(decoded.height, decoded.width, p.shortest_edge, p.longest_edge, p.size_divisor);
    if (nw != steps.resized.width) steps.resized = resize_pass(steps.resized, nw, 1);
    if (nh != steps.resized.height) steps.resized = resize_pass(steps.resized, nh, 0);
  }
  const Rgb& r = steps.resized;
  const int ch = p.crop ? p.image_size : r.height, cw = p.crop ? p.image_size : r.width;
  const int canvas_h = std::max(ch, r.height), canvas_w = std::max(cw, r.width);  // §4: zero pad, then crop
  const int pad_top = (canvas_h - r.height + 1) / 2, pad_left = (canvas_w - r.width + 1) / 2;
  const int top = (canvas_h - ch) / 2, left = (canvas_w - cw) / 2;
  steps.cropped.resize(static_cast<size_t>(3) * ch * cw);
  steps.pixel_values.resize(steps.cropped.size());
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < ch; ++y) {
      for (int x = 0; x < cw; ++x) {
        const int sy = y + top - pad_top, sx = x + left - pad_left;
        const bool inside = sy >= 0 && sy < r.height && sx >= 0 && sx < r.width;
        const uint8_t v = inside ? r.pixels[(static_cast<size_t>(sy) * r.width + sx) * 3 + c] : 0;
        const size_t k = (static_cast<size_t>(c) * ch + y) * cw + x;
        steps.cropped[k] = v;
        const float scaled = static_cast<float>(v * p.rescale_factor);  // §5: double product, then float32
        // §6 in float32: volatile keeps each operation rounded to float (no fused multiply-add, no excess precision)
        volatile float centered = scaled - p.mean[c];
        steps.pixel_values[k] = p.normalize ? centered / p.std[c] : scaled;
      }
    }
  }
  return steps;
}

}  // namespace bt
