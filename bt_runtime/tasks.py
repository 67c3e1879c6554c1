"""Tasks on top of the features: image-text matching, fill-mask and contrastive embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BtRuntimeError, TaskUnavailableError, TextInputError
from .features import check_image_list, check_positive, softmax
from .text import check_texts, shorten


@dataclass
class MaskPrediction:
    position: int  # token position of the <mask> in input_ids
    token_ids: list[int]
    tokens: list[str]  # decoded, surrounding whitespace stripped
    probabilities: list[float]


@dataclass
class FillMaskResult:
    masks: list[MaskPrediction]
    sentence: str  # the text with every <mask> replaced by its most likely token


class Tasks:
    """Task methods of BridgeTowerRuntime (they use bt_runtime.features.Features' methods)."""

    @property
    def heads(self) -> tuple[str, ...]:
        return self.manifest.heads

    def _require(self, head: str, task: str) -> None:
        if head not in self.heads:
            names = {"itm": "image-text matching (itm)", "mlm": "masked-LM (mlm)", "itc": "contrastive (itc)"}
            raise TaskUnavailableError(f"{task}: this export has no {names[head]} head (heads: "
                                       f"{', '.join(self.heads) or 'none'}); export a checkpoint that has one")

    def itm_scores(self, image, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Match probability of one image with each text → (len(texts),). The vision tower runs once."""
        self._require("itm", "itm_scores")
        if self.backend.device == "cuda":  # the bridges stay on the GPU between graphs
            check_texts(texts)
            batch_size = self.pair_batch_size(batch_size)
            check_positive(batch_size, "batch_size")
            return self.match_one_image_bound(image, texts, batch_size)
        text_features = self.encode_texts(texts)
        image_features = self.encode_image(image)
        count = len(texts)
        return self.match_probabilities(text_features, image_features, np.arange(count), np.zeros(count, np.int64),
                                        batch_size, False)

    def itm_pairs(self, images: list, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Match probability of images[k] with texts[k] → (n,)."""
        self._require("itm", "itm_pairs")
        check_image_list(images, "images")
        check_texts(texts)
        if len(images) != len(texts):
            raise BtRuntimeError(f"itm_pairs: images has {len(images)} items but texts has {len(texts)}; "
                                 "they must pair one to one (use itm_matrix for every combination)")
        index = np.arange(len(texts))
        return self.match_probabilities(self.encode_texts(texts), self.encode_images(images), index, index,
                                        batch_size, False)

    def itm_matrix(self, images: list, texts: list[str], batch_size: int | None = None,
                   progress: bool = False) -> np.ndarray:
        """Match probability of every image with every text → (n_images, n_texts); each tower once per input."""
        self._require("itm", "itm_matrix")
        image_features = self.encode_images(images, progress=progress)
        text_features = self.encode_texts(texts)
        image_index, text_index = np.divmod(np.arange(len(images) * len(texts)), len(texts))
        scores = self.match_probabilities(text_features, image_features, text_index, image_index, batch_size, progress)
        return scores.reshape(len(images), len(texts))

    def fill_mask(self, image, text: str, top_k: int = 5) -> FillMaskResult:
        """Most likely tokens for each <mask> in `text`, given `image`, and the sentence with them filled in."""
        self._require("mlm", "fill_mask")
        if not isinstance(text, str):  # one text per call; a list would be reported as "text[0]" below
            raise TextInputError(f"text: expected one string with {self.tokenizer.mask_token} in it (fill_mask "
                                 f"takes one text per call), got {type(text).__name__}")
        check_texts([text], "text")
        if self.tokenizer.mask_token not in text:
            raise TextInputError(f"text: {shorten(text)} has no {self.tokenizer.mask_token} token to fill")
        check_positive(top_k, "top_k")
        text_features = self.encode_texts([text], name="text")
        positions = np.flatnonzero(text_features.input_ids[0] == self.tokenizer.mask_token_id)
        written = text.count(self.tokenizer.mask_token)  # each occurrence is one added token (never split)
        if positions.size < written:  # never answer fewer masks than were asked for
            raise TextInputError(f"text: {written - positions.size} of the {written} {self.tokenizer.mask_token} in "
                                 f"{shorten(text)} are cut off by truncation at {self.tokenizer.max_length} tokens; "
                                 "shorten the text before the last mask")
        logits = self.cross_modal(text_features, self.encode_image(image), np.zeros(1, np.int64),
                                  np.zeros(1, np.int64), ["mlm_logits"])["mlm_logits"][0][0]  # (S, V)
        probabilities = softmax(logits[positions])  # (M, V)
        top_k = min(top_k, probabilities.shape[-1])
        masks, filled = [], text_features.input_ids[0, :int(text_features.lengths[0])].copy()
        for row, position in enumerate(positions):
            best = np.argsort(-probabilities[row])[:top_k]
            masks.append(MaskPrediction(int(position), [int(t) for t in best],
                                        [self.tokenizer.decode([t]).strip() for t in best],
                                        [float(probabilities[row, t]) for t in best]))
            filled[position] = best[0]
        return FillMaskResult(masks, self.tokenizer.decode(filled).strip())

    def embed_images(self, images: list, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """L2-normalized contrastive image embeddings → (n, E)."""
        self._require("itc", "embed_images")
        return self.encode_images(images, batch_size, progress).embeds

    def embed_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalized contrastive text embeddings → (n, E)."""
        self._require("itc", "embed_texts")
        return self.encode_texts(texts, batch_size).embeds
