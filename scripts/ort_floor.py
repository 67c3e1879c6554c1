"""Measure which ONNX Runtime releases run each variant of some exports: one virtual environment per release
(`pip install onnxruntime==X`, numpy < 2 for releases built before NumPy 2), each variant's three graphs loaded and
run on the export's golden inputs, the ITM logits compared with the golden ones. Prints a markdown table; the
floors in `bt_export/export.py` (MIN_ONNXRUNTIME) come from it.

    python3 scripts/ort_floor.py EXPORT [EXPORT ...] --versions 1.16.3 1.18.1 1.20.1 1.22.1 1.23.0

Needs network access to PyPI (the releases are installed into /tmp/bt-ort-floor/<version>, reused on reruns).
Uses the manifest JSON and onnxruntime only, never bt_runtime: old releases must not need this project's imports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path("/tmp/bt-ort-floor")

# Runs inside each release's venv: loads every variant of one export, feeds the golden inputs, prints JSON.
PROBE = r"""
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort

directory = Path(sys.argv[1])
manifest = json.loads((directory / "manifest.json").read_text())
golden = {t["name"]: np.fromfile(directory / t["file"], dtype=np.dtype(t["dtype"]).newbyteorder("<"))
          .reshape(t["shape"]) for t in manifest["golden"]["tensors"]}
result = {}
for variant, spec in manifest["variants"].items():
    io_dtype = np.float16 if spec.get("io_dtype") == "float16" else np.float32
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        sessions = {g: ort.InferenceSession(str(directory / f["file"]), options, providers=["CPUExecutionProvider"])
                    for g, f in spec["files"].items()}
        run = lambda g, feeds: dict(zip([o.name for o in sessions[g].get_outputs()], sessions[g].run(None, feeds)))
        vision = run("vision_tower", {"pixel_values": golden["pixel_values"][None].astype(io_dtype)})
        ids, mask = golden["input_ids"], golden["attention_mask"]
        text = run("text_tower", {"input_ids": ids, "attention_mask": mask})
        cross = run("cross_modal", {"text_bridge": text["text_bridge"], "image_bridge": vision["image_bridge"],
                                    "attention_mask": mask, "image_index": np.zeros(len(ids), np.int64)})
        diff = float(np.abs(cross["itm_logits"].astype(np.float64) - golden["itm_logits"]).max())
        result[variant] = {"ok": True, "itm_logits_max_abs_diff": diff}
    except Exception as error:  # the point: which releases refuse, and why
        result[variant] = {"ok": False, "error": str(error).splitlines()[0][:160]}
print(json.dumps({"onnxruntime": ort.__version__, "variants": result}))
"""


def venv_python(version: str) -> Path:
    env = ROOT / version
    python = env / "bin" / "python"
    if not (env / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        numpy = "numpy<2" if tuple(int(p) for p in version.split(".")[:2]) < (1, 19) else "numpy"
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        f"onnxruntime=={version}", numpy], check=True)
        (env / ".ready").touch()
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--versions", nargs="+", default=["1.16.3", "1.18.1", "1.20.1", "1.22.1", "1.23.0"])
    args = parser.parse_args()
    rows = []
    for version in args.versions:
        python = venv_python(version)
        for export in args.exports:
            out = subprocess.run([str(python), "-c", PROBE, str(export)], capture_output=True, text=True)
            if out.returncode != 0:
                rows.append((version, export.name, "*", f"probe failed: {out.stderr.strip().splitlines()[-1]}"))
                continue
            for variant, r in json.loads(out.stdout)["variants"].items():
                rows.append((version, export.name, variant,
                             f"ok (ITM logits max |Δ| {r['itm_logits_max_abs_diff']:.1e})" if r["ok"] else
                             f"refused: {r['error']}"))
    print("| onnxruntime | export | variant | result |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
