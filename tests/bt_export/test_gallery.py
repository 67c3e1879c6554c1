"""--parity-images DIR (bt-export, and bt-bench --images through the same loader) lists only regular files: a FIFO
named *.png is refused by name, never opened (opening it would block forever)."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from bt_export.errors import BtExportError
from bt_export.samples import load_images
from tests.bt_runtime.test_limits import _within, release_fifo


def test_a_fifo_in_the_parity_images_is_refused_not_opened(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    try:
        with pytest.raises(BtExportError, match=r"--parity-images .*b\.png \(a FIFO, not a regular file\)"):
            _within(10, lambda: load_images([tmp_path]))
    finally:
        release_fifo(tmp_path / "b.png")
