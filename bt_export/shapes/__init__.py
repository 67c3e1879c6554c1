"""The `shapes` reference checkpoint: generated data (`data`, numpy + Pillow only) and its training (`train`, torch)."""
