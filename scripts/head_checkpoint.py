"""Write a full-size checkpoint of one head class with transformers' own `save_pretrained`, from the random init
of an alias (seeded as bt-export's `--random-init`): the checkpoint a user with only that head would bring.

    python3 scripts/head_checkpoint.py base-itm-mlm itm /tmp/base-itm-ckpt --tokenizer ../shared/assets/roberta-base

Used for the ITM-only int8 search report (benchmarks/results/base-itm-random-init-int8-search.md): without an MLM
head the search is judged on the ITM bounds alone.
"""

from __future__ import annotations

import argparse

from bt_export.configs import HEAD_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("alias")
    parser.add_argument("head", choices=HEAD_NAMES)
    parser.add_argument("output")
    parser.add_argument("--tokenizer", required=True)
    args = parser.parse_args()

    from bt_export.eager import EagerBridgeTower

    EagerBridgeTower(args.alias, args.tokenizer, random_init=True, tokenizer=args.tokenizer).save_pretrained(
        args.output, args.head)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
