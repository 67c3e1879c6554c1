"""Build the small byte-level BPE tokenizer that `bt_export` ships for the offline `tiny` checkpoint.

Run once by a developer; its output (bt_export/assets/tiny_tokenizer/) is committed. Training is deterministic for a
fixed corpus, so rerunning reproduces the same files. The special tokens follow RoBERTa's layout
(<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last) so the same code paths serve the tiny and the real tokenizer.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 1000
SUBJECTS = ["a cat", "two cats", "a dog", "a man", "a woman", "a child", "a football player", "a bird", "a horse",
            "a train", "a car", "a bus", "an airplane", "a boat", "a pizza", "a plate of food", "a group of people",
            "an elephant", "a giraffe", "a zebra", "a bear", "a kite", "a skateboarder", "a surfer", "a laptop"]
VERBS = ["sitting on", "lying on", "standing next to", "looking out of", "chilling on", "playing with", "riding",
         "running across", "flying over", "parked near", "eating", "holding", "scoring a goal in"]
PLACES = ["a couch", "the window", "a table", "the street", "a field", "the beach", "a bed", "the grass", "a road",
          "the kitchen", "a park", "the snow", "the water", "a remote control", "the sky"]


def corpus() -> list[str]:
    lines = [f"{s} {v} {p}" for s, v, p in itertools.product(SUBJECTS, VERBS, PLACES)]
    lines += [line.capitalize() + "." for line in lines[::7]]
    lines += ["An image of two cats chilling on a couch", "A photo of the camera man", "0123456789 ,.;:!?'\"()-"]
    return lines


def build() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    # last id and lstrip, as in RoBERTa: "A <mask>" keeps the space inside the mask token
    tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return tokenizer


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build()
    tokenizer.save(str(out_dir / "tokenizer.json"))
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab["<mask>"] = tokenizer.token_to_id("<mask>")
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(f"vocab size {tokenizer.get_vocab_size()}, <mask>={tokenizer.token_to_id('<mask>')} -> {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "bt_export/assets/tiny_tokenizer")
