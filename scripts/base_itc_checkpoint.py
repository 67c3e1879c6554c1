"""Write a full-size *base* checkpoint with ITM, MLM and ITC heads, random weights seeded as bt-export's
`--random-init`, as a save_pretrained directory that `bt-export -c DIR` reads. No released base checkpoint has
ITC heads (only large-itm-mlm-itc), and the index job needs them (docs/scale.md): this is the base architecture
(bt_export.configs) with the large-itm-mlm-itc release's contrastive values (512-d embeddings, logit scale).

    python3 scripts/base_itc_checkpoint.py /tmp/base-itc-ckpt --tokenizer ../shared/assets/roberta-base
    bt-export -c /tmp/base-itc-ckpt -o /tmp/base-itc --precision fp32

Used for the full-size Ray vs in-process index measurement (benchmarks/results/scale-2core.md).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.json, or vocab.json + merges.txt")
    args = parser.parse_args()

    from bt_export.checkpoints import _random_checkpoint
    from bt_export.configs import KNOWN_CHECKPOINTS
    from bt_export.tokenizer_files import TOKENIZER_LAYOUTS

    itc = {k: KNOWN_CHECKPOINTS["large-itm-mlm-itc"].config[k] for k in ("contrastive_hidden_size",
                                                                         "logit_scale_init_value")}
    loaded = _random_checkpoint("base-itc", {**KNOWN_CHECKPOINTS["base-itm-mlm"].config, **itc},
                                ("itm", "mlm", "itc"), args.tokenizer, seed=0)
    loaded.model.save_pretrained(args.output)
    for layout in TOKENIZER_LAYOUTS:
        for name in layout:
            if (args.tokenizer / name).is_file():
                shutil.copy(args.tokenizer / name, args.output / name)
    print(f"wrote {args.output} (heads: {', '.join(loaded.heads)})")


if __name__ == "__main__":
    main()
