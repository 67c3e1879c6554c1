"""Edits of written graphs that tests use to make a variant wrong on purpose."""

from __future__ import annotations

from pathlib import Path

import onnx

from bt_export.onnx_export import save_model


def flip_itm_head(path: Path) -> None:
    """Scale the ITM head's float weights by −50 in the graph at `path` (weights kept as external data)."""
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        if "itm_score" in tensor.name and tensor.data_type == onnx.TensorProto.FLOAT:
            array = onnx.numpy_helper.to_array(tensor).copy()
            tensor.CopyFrom(onnx.numpy_helper.from_array(array * -50.0, tensor.name))
    save_model(model, Path(path))
