"""Byte tokenizer: round trips, empty and over-long captions, context fitting, JSON restore."""

import numpy as np
import pytest

from sslax.data import text


@pytest.mark.parametrize("caption", ["a photo of a dog.", "Crème brûlée, 北京 🐧", "x"])
def test_round_trip(caption):
  tok = text.ByteTokenizer(context_length=64)
  ids = tok.encode(caption)
  assert ids.shape == (64,) and ids.dtype == np.int32
  assert tok.decode(ids) == caption
  n = len(caption.encode("utf-8"))
  # [SOT, bytes + 1 ..., EOT, PAD ...] written out by hand:
  assert ids[0] == text.SOT and ids[n + 1] == text.EOT and np.all(ids[n + 2 :] == text.PAD)
  np.testing.assert_array_equal(
    ids[1 : n + 1], np.frombuffer(caption.encode("utf-8"), np.uint8) + 1
  )


def test_empty_caption_is_start_and_end_only():
  ids = text.ByteTokenizer(context_length=8).encode("")
  np.testing.assert_array_equal(ids, [text.SOT, text.EOT, 0, 0, 0, 0, 0, 0])
  assert text.ByteTokenizer(8).decode(ids) == ""


def test_over_long_caption_keeps_start_and_ends_with_eot():
  tok = text.ByteTokenizer(context_length=6)
  ids = tok.encode("abcdefghij")
  np.testing.assert_array_equal(
    ids, [text.SOT, ord("a") + 1, ord("b") + 1, ord("c") + 1, ord("d") + 1, text.EOT]
  )
  assert tok.decode(ids) == "abcd"


def test_fit_context_cuts_with_eot_and_pads():
  tok = text.ByteTokenizer(context_length=12)
  ids = tok.encode_batch(["abcdefghij", "ab"])
  cut = np.asarray(text.fit_context(ids, 5))
  np.testing.assert_array_equal(cut[0], [text.SOT, 98, 99, 100, text.EOT])  # forced EOT
  np.testing.assert_array_equal(cut[1], [text.SOT, 98, 99, text.EOT, 0])  # already short
  padded = np.asarray(text.fit_context(ids, 16))
  assert padded.shape == (2, 16) and np.all(padded[:, 12:] == text.PAD)


def test_json_and_array_round_trip_without_captions():
  tok = text.ByteTokenizer(context_length=33)
  again = text.ByteTokenizer.from_array(tok.to_array())
  assert again == tok and text.ByteTokenizer.from_json(tok.to_json()) == tok
  with pytest.raises(ValueError, match="not a 'bytes' tokenizer"):
    text.ByteTokenizer.from_json('{"kind": "bpe", "vocab_size": 49408}')


def test_bad_inputs_name_the_fix():
  with pytest.raises(ValueError, match="context_length=1"):
    text.ByteTokenizer(context_length=1)
  with pytest.raises(TypeError, match="captions must be str"):
    text.ByteTokenizer().encode(None)
