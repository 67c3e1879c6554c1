#!/usr/bin/env bash
# Everything the tests need, installed from the repo's own files: export + test + scale extras on the CPU torch wheel,
# the Node and C++ examples' dependencies, bt-serve's own environment (.venv-serve, where the serving tests find it).
# The README's test command is `bash scripts/dev_setup.sh && python3 -m pytest tests`; CI (.ci/run) runs the same and
# requires the example and serving tests instead of skipping them (docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@"; }
# The CPU build of torch first: an unconstrained torch from PyPI is a multi-GB CUDA build (docs/development.md).
pip_install "torch==2.13.0"
pip_install -e ".[export,test,scale]"
# The Node example's runtime (tests/examples/test_node.py must run here, not skip): the CPU build ships in the
# package, `skip` avoids its optional CUDA download.
npm install --prefix examples/node --no-audit --no-fund --onnxruntime-node-install=skip
# The C++ example: cmake and g++ are on the machine; JSON, libpng and libjpeg-turbo (the JPEG decoder Pillow uses)
# from Debian; the ONNX Runtime headers come from Debian's libonnxruntime-dev .deb, which examples/cpp/build.sh
# downloads and checks by sha256 (the library is the wheel's).
if [ ! -f /usr/include/nlohmann/json.hpp ] || [ ! -f /usr/include/png.h ] || [ ! -f /usr/include/jpeglib.h ]; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  cpp_packages="nlohmann-json3-dev libpng-dev libjpeg62-turbo-dev"
  $sudo_ apt-get install -y -q $cpp_packages || { $sudo_ apt-get update -q && $sudo_ apt-get install -y -q $cpp_packages; }
fi
# bt-serve's own environment (nvidia-pytriton pins numpy < 2; the test environment keeps numpy 2): the serving tests
# start the server from it and talk to it with tritonclient from the test environment.
python3 -m venv .venv-serve
.venv-serve/bin/python -m pip install --quiet --disable-pip-version-check -e ".[serve]"
