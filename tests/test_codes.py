"""retrieval.core.codes against hand-written bit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.core.codes import SUPPORTED_BITS, as_codes, check_bits, hamming, pack, parse, to_hex, unpack


def _naive_hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Count differing bits one at a time, as a person would."""
    total = 0
    for x, y in zip(a.tolist(), b.tolist()):
        for bit in range(8):
            total += ((x >> bit) & 1) != ((y >> bit) & 1)
    return total


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_pack_unpack_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    signs = rng.choice([-1.0, 1.0], size=(7, bits)).astype(np.float32)
    codes = pack(signs)
    assert codes.shape == (7, bits // 8) and codes.dtype == np.uint8
    assert torch.equal(unpack(codes), torch.from_numpy(signs))
    assert np.array_equal(pack(torch.from_numpy(signs)), codes)


def test_pack_bit_order_is_big_endian_and_zero_is_minus() -> None:
    signs = np.full((1, 16), -1.0)
    signs[0, 0] = 1.0  # first bit -> MSB of byte 0
    signs[0, 15] = 0.5  # last bit -> LSB of byte 1
    signs[0, 7] = 0.0  # zero is not > 0: bit 0
    assert pack(signs).tolist() == [[0b1000_0000, 0b0000_0001]]


def test_pack_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        pack(np.ones((2, 12)))
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        pack(np.ones(16))


def test_as_codes_and_check_bits() -> None:
    with pytest.raises(ValueError, match="uint8"):
        as_codes(np.zeros((2, 4), dtype=np.int64))
    assert check_bits(32) == 32
    for bad in (12, 0, 128, "32", 32.0):
        with pytest.raises(ValueError, match="hash_bits"):
            check_bits(bad)


@pytest.mark.parametrize("bits", [16, 24, 48, 64])
def test_hamming_matches_naive_bit_loop(bits: int) -> None:
    rng = np.random.default_rng(bits)
    a = rng.integers(0, 256, (9, bits // 8), dtype=np.uint8)
    b = rng.integers(0, 256, (11, bits // 8), dtype=np.uint8)
    b[0] = a[0]  # distance 0
    b[1] = ~a[1]  # distance K
    d = hamming(a, b)
    assert d.shape == (9, 11) and d.dtype == np.int64
    expected = [[_naive_hamming(x, y) for y in b] for x in a]
    assert d.tolist() == expected
    assert d[0, 0] == 0 and d[1, 1] == bits


def test_hamming_equals_sign_vector_formula() -> None:
    """d_H = (K - <b_i, b_j>) / 2 on {-1, +1} vectors, the identity DPSH relies on."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    s = unpack(codes).numpy()
    assert np.array_equal(hamming(codes, codes), ((32 - s @ s.T) / 2).astype(np.int64))


def test_hamming_rejects_width_mismatch() -> None:
    with pytest.raises(ValueError, match="widths differ"):
        hamming(np.zeros((1, 2), np.uint8), np.zeros((1, 4), np.uint8))


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_hex_and_binary_parse_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits + 1)
    code = rng.integers(0, 256, (1, bits // 8), dtype=np.uint8)
    text = to_hex(code[0])
    assert len(text) == bits // 4 and text == text.lower()
    assert np.array_equal(parse(text, bits), code)
    assert np.array_equal(parse("0x" + text.upper(), bits), code)
    binary = "".join(str(int(v > 0)) for v in unpack(code)[0].tolist())
    assert np.array_equal(parse(binary, bits), code)
    assert np.array_equal(parse(f"  {binary}\n", bits), code)


def test_to_hex_known_value() -> None:
    assert to_hex(np.array([0x0F, 0xA0], dtype=np.uint8)) == "0fa0"
    assert parse("0fa0", 16).tolist() == [[0x0F, 0xA0]]
    assert parse("0000111110100000", 16).tolist() == [[0x0F, 0xA0]]


@pytest.mark.parametrize("text", ["0fa", "0fa0a", "zzzz", "0f a", "", "012"])
def test_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="code"):
        parse(text, 16)


def test_parse_rejects_hex_with_spaces_that_fromhex_would_skip() -> None:
    with pytest.raises(ValueError, match="not valid hex"):
        parse("ab cd ef", 32)  # 8 characters, but only 3 bytes


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="string"):
        parse(1234, 16)  # type: ignore[arg-type]
