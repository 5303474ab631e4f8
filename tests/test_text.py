"""The pydoc character corpus: contents, contiguous seeded split, vocabulary, windows."""
import numpy as np
import pytest

from funcnn import data
from funcnn.data import text


@pytest.fixture(scope="module")
def corpus():
    return text.load_pydoc(0)


def test_corpus_is_the_sorted_pydoc_topics_split_into_contiguous_blocks(corpus):
    from pydoc_data.topics import topics

    full = "".join(topics[k] for k in sorted(topics))
    assert text.pydoc_text() == full and len(full) > 400_000
    assert corpus.vocab == "".join(sorted(set(full)))
    assert len(corpus.train) + len(corpus.validation) == len(full)
    ids = corpus.encode(full)
    blocks = [ids[i:i + text.BLOCK] for i in range(0, len(ids), text.BLOCK)]
    n_val = round(text.VALIDATION_FRACTION * len(blocks))
    # validation = n_val whole blocks, in corpus order; train = the others, in corpus order
    val_idx = [i for i, b in enumerate(blocks)
               if any(np.array_equal(b, corpus.validation[j:j + len(b)])
                      for j in range(0, len(corpus.validation), text.BLOCK))]
    assert len(val_idx) == n_val
    np.testing.assert_array_equal(corpus.validation, np.concatenate([blocks[i] for i in val_idx]))
    np.testing.assert_array_equal(corpus.train,
                                  np.concatenate([b for i, b in enumerate(blocks) if i not in val_idx]))


def test_split_is_fixed_by_the_seed(corpus):
    again, other = text.load_pydoc(0), text.load_pydoc(1)
    np.testing.assert_array_equal(again.validation, corpus.validation)
    assert not np.array_equal(other.validation, corpus.validation)


def test_data_load_registers_pydoc(corpus):
    loaded = data.load("pydoc", seed=0)
    assert isinstance(loaded, text.Corpus) and loaded.name == "pydoc"
    np.testing.assert_array_equal(loaded.train, corpus.train)


def test_encode_decode_round_trip_and_unknown_character(corpus):
    s = "def f(x):\n    return x  # “quoted”"
    assert corpus.decode(corpus.encode(s)) == s
    assert corpus.encode(s).dtype == np.int32
    with pytest.raises(ValueError, match="pydoc.encode: character '€' is not in the vocabulary"):
        corpus.encode("5 €")


def test_random_windows_are_substrings_with_next_character_targets(corpus):
    ids = corpus.train
    x, y = text.random_windows(ids, 16, 5, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 16) and x.dtype == np.int32
    for row_x, row_y in zip(x, y):
        starts = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(ids, 17) ==
                                       np.append(row_x, row_y[-1]), axis=1))
        assert starts.size >= 1  # (x, last target) is a window of 17 consecutive characters
        np.testing.assert_array_equal(row_y[:-1], row_x[1:])
    x2, _ = text.random_windows(ids, 16, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)


def test_eval_windows_tile_the_text_without_overlap(corpus):
    ids = corpus.validation
    x, y = text.eval_windows(ids, 64)
    assert x.shape == ((len(ids) - 1) // 64, 64)
    np.testing.assert_array_equal(x.reshape(-1), ids[:x.size])
    np.testing.assert_array_equal(y.reshape(-1), ids[1:x.size + 1])
    assert text.eval_windows(ids, 64, max_windows=3)[0].shape == (3, 64)


def test_windows_refuse_bad_context():
    ids = np.arange(10, dtype=np.int32)
    with pytest.raises(ValueError, match="random_windows: context must be below the text length 10, got 10"):
        text.random_windows(ids, 10, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="eval_windows: context must be a positive integer, got 0"):
        text.eval_windows(ids, 0)
