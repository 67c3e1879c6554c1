#!/usr/bin/env bash
# Build examples/cpp/verify_itm from packages this project can install:
#   headers  Debian's libonnxruntime-dev 1.21.0 (trixie), downloaded once and checked against its sha256
#            (Debian 12, this project's machines, has no such package; the .deb is only unpacked, not installed —
#            its libonnxruntime1.21 needs a newer glibc, and is not used);
#   library  libonnxruntime.so.* shipped inside the PyPI onnxruntime wheel of `python3` (any version >= 1.21: the
#            C API is versioned and backward compatible; the default fused export needs a library >= 1.23);
#   JSON     nlohmann-json3-dev (Debian 12: apt-get install nlohmann-json3-dev).
# Override with ORT_INCLUDE_DIR / ORT_LIBRARY to use your own ONNX Runtime. Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${BUILD_DIR:-$here/build}"
mkdir -p "$build"

deb_name="libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
deb_url="http://deb.debian.org/debian/pool/main/o/onnxruntime/$deb_name"
deb_sha256="14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"
if [ -z "${ORT_INCLUDE_DIR:-}" ]; then
  headers="$build/ort-headers"
  if [ ! -f "$headers/usr/include/onnxruntime/onnxruntime_cxx_api.h" ]; then
    [ -f "$build/$deb_name" ] || curl -fsSL --retry 3 -o "$build/$deb_name.part" "$deb_url"
    [ -f "$build/$deb_name" ] || mv "$build/$deb_name.part" "$build/$deb_name"
    echo "$deb_sha256  $build/$deb_name" | sha256sum --check --quiet || {
      echo "build.sh: $deb_name does not have the expected sha256 (removed it; run again)" >&2
      rm -f "$build/$deb_name"; exit 1; }
    rm -rf "$headers" && dpkg-deb -x "$build/$deb_name" "$headers"
  fi
  ORT_INCLUDE_DIR="$headers/usr/include/onnxruntime"
fi
if [ -z "${ORT_LIBRARY:-}" ]; then
  ORT_LIBRARY="$(python3 -c 'import glob, os, onnxruntime
found = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))
print(found[-1] if found else "")')"
  [ -n "$ORT_LIBRARY" ] || { echo "build.sh: no libonnxruntime.so.* in the onnxruntime wheel of python3" >&2; exit 1; }
fi
# The wheel's file is libonnxruntime.so.1.X.Y but its SONAME is libonnxruntime.so.1: the loader looks for that name
# (in the binary's rpath, this folder).
mkdir -p "$build/lib"
ln -sf "$(readlink -f "$ORT_LIBRARY")" "$build/lib/libonnxruntime.so.1"
ORT_LIBRARY="$build/lib/libonnxruntime.so.1"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DORT_INCLUDE_DIR="$ORT_INCLUDE_DIR" \
  -DORT_LIBRARY="$ORT_LIBRARY" >"$build/cmake.log"
cmake --build "$build" -j 2 >"$build/make.log" || { cat "$build/make.log" >&2; exit 1; }
echo "$build/verify_itm"
