"""Strings to token tensors with a Hugging Face fast tokenizer (``tokenizer.json``).

The ``tokenizers`` package (the ``text`` extra) is imported lazily. One ``Tokenizer`` is
shared by the processing threads: ``encode_batch`` does not mutate it (padding and
truncation are left off on it and done here in numpy), and it releases the GIL while it
tokenizes. A text longer than ``max_length`` tokens is refused, never cut silently.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferpack.errors import ConfigError, InvalidInputError, MissingExtraError


class TextEncoder:
    """A fast tokenizer loaded from a model folder."""

    def __init__(self, tokenizer: Any, max_length: int, pad_id: int) -> None:
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id

    @classmethod
    def shared(cls, path: Path, max_length: int) -> TextEncoder:
        """The encoder of this tokenizer file, shared by every loaded model whose file has
        the same bytes (thousands of per-customer models of one base share one tokenizer:
        a few MB each otherwise); freed when the last model using it is unloaded."""
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as error:
            raise ConfigError([f"{path}: cannot load the tokenizer: {error}"]) from None
        key = (digest, max_length)
        with _SHARED_LOCK:
            encoder = _SHARED.get(key)
            if encoder is None:
                encoder = cls.from_file(path, max_length)
                _SHARED[key] = encoder
            return encoder

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> TextEncoder:
        try:
            from tokenizers import Tokenizer
        except ImportError as error:
            raise MissingExtraError("tokenizers", "text") from error
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises plain Exception subclasses
            raise ConfigError([f"{path}: cannot load the tokenizer: {error}"]) from None
        padding = tokenizer.padding
        pad_id = int(padding.get("pad_id", 0)) if isinstance(padding, dict) else 0
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer, max_length, pad_id)

    def encode(
        self, texts: Sequence[str], pad_to_multiple_of: int = 8, with_type_ids: bool = False
    ) -> dict[str, np.ndarray]:
        """int64 [n, L]: ``input_ids``, ``attention_mask`` (and ``token_type_ids``) with L
        the longest encoding rounded up to ``pad_to_multiple_of`` (at most max_length)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(encoding.ids) for encoding in encodings]
        for index, length in enumerate(lengths):
            if length > self.max_length:
                raise InvalidInputError(
                    f"text {index} makes {length} tokens, over the model's limit of "
                    f"{self.max_length} (preprocess.text.max_length)"
                )
        longest = max(lengths, default=1)
        multiple = max(1, pad_to_multiple_of)
        width = min(self.max_length, -(-longest // multiple) * multiple)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : lengths[row]] = encoding.ids
            mask[row, : lengths[row]] = 1
        result = {"input_ids": ids, "attention_mask": mask}
        if with_type_ids:
            result["token_type_ids"] = np.zeros_like(ids)
        return result


_SHARED: weakref.WeakValueDictionary[tuple[str, int], TextEncoder] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def decode_texts(items: np.ndarray) -> list[str]:
    """A BYTES tensor ([n] or [n, 1]) to strings; invalid UTF-8 names its index."""
    texts = []
    for index, item in enumerate(items.reshape(-1)):
        if isinstance(item, str):
            texts.append(item)
            continue
        if not isinstance(item, bytes | bytearray | memoryview):
            raise InvalidInputError(f"text {index} must be bytes, got {type(item).__name__}")
        try:
            texts.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidInputError(f"text {index} is not valid UTF-8: {error}") from None
    return texts
