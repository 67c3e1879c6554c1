"""bt-serve: BridgeTower exports on NVIDIA Triton Inference Server (PyTriton)."""
