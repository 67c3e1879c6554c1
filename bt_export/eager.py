"""Eager transformers on a checkpoint, the way the transformers docs use it: HF processor + HF head classes over
the loaded weights. The reference for runtime parity tests and the baseline for benchmarks."""

from __future__ import annotations

import sys

import numpy as np
import torch

from .checkpoints import load_checkpoint
from .model import hf_reference
from .samples import hf_processor


class EagerBridgeTower:
    def __init__(self, checkpoint: str, tokenizer_dir, **load_kwargs):
        """`tokenizer_dir`: where the tokenizer files are (an export directory has them)."""
        self.loaded = load_checkpoint(checkpoint, **load_kwargs)
        if self.loaded.unused:  # bt-export says the same of this checkpoint: the baseline does not use them either
            print(f"eager: {self.loaded.unused_note()} (not used)", file=sys.stderr)
        self.processor = hf_processor(self.loaded.image_processor, tokenizer_dir)
        self._models = {}

    def model(self, head):
        if head not in self._models:
            self._models[head] = hf_reference(self.loaded.model, head)
        return self._models[head]

    def save_pretrained(self, directory, head: str) -> None:
        """The checkpoint of `head`'s HF class and its processor, written by transformers' own save_pretrained."""
        self.model(head).save_pretrained(directory)
        self.processor.save_pretrained(directory)

    @torch.no_grad()
    def itm_probability(self, image, text: str) -> float:
        """The HF documentation's loop body: one processor + model call per text."""
        encoding = self.processor(images=image, text=text, return_tensors="pt")
        logits = self.model("itm")(**encoding).logits
        return float(torch.softmax(logits, dim=-1)[0, 1])

    @torch.no_grad()
    def mlm_logits(self, image, text: str) -> tuple[np.ndarray, np.ndarray]:
        encoding = self.processor(images=image, text=text, return_tensors="pt")
        return self.model("mlm")(**encoding).logits[0].numpy(), encoding["input_ids"][0].numpy()

    @torch.no_grad()
    def contrastive(self, images: list, texts: list[str]):
        encoding = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        out = self.model("itc")(**encoding)
        return out.image_embeds.numpy(), out.text_embeds.numpy()
