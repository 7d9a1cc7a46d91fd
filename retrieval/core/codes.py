"""The one hash-code format: packed uint8 rows of shape (n, K/8).

Everything outside this module handles codes packed; this is where they turn into
{-1, +1} vectors (for losses and attacks), bit strings or hex (for the API).
Bit order is numpy's big-endian ``packbits`` order: bit j of a code is
``(packed[j // 8] >> (7 - j % 8)) & 1`` and bit 1 stands for +1.
"""

from __future__ import annotations

import numpy as np
import torch

SUPPORTED_BITS = (16, 24, 32, 48, 64)

_HEX_DIGITS = frozenset("0123456789abcdef")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def check_bits(hash_bits: int) -> int:
    """Return ``hash_bits`` if it is a supported code length, else raise ValueError."""
    if not isinstance(hash_bits, int) or hash_bits not in SUPPORTED_BITS:
        raise ValueError(f"hash_bits must be one of {SUPPORTED_BITS}; got {hash_bits!r}")
    return hash_bits


def pack(signs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pack sign vectors into codes. Values > 0 become bit 1, the rest bit 0.

    Shape: (n, K) float or int -> (n, K/8) uint8.
    """
    if isinstance(signs, torch.Tensor):
        signs = signs.detach().cpu().numpy()
    signs = np.asarray(signs)
    if signs.ndim != 2 or signs.shape[1] % 8:
        raise ValueError(f"signs must have shape (n, K) with K a multiple of 8; got {signs.shape}")
    return np.packbits(signs > 0, axis=1)


def unpack(codes: np.ndarray) -> torch.Tensor:
    """Unpack codes into float {-1, +1} vectors. Shape: (n, K/8) uint8 -> (n, K) float32."""
    codes = as_codes(codes)
    bits = np.unpackbits(codes, axis=1).astype(np.float32)
    return torch.from_numpy(bits * 2.0 - 1.0)


def as_codes(codes: np.ndarray) -> np.ndarray:
    """Validate a packed code array and return it as a contiguous (n, K/8) uint8 array."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D uint8 array; got dtype {codes.dtype}, shape {codes.shape}")
    return np.ascontiguousarray(codes)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two sets of packed codes.

    Shape: (n, B) and (m, B) uint8 -> (n, m) int64. Brute force by popcount table; this is
    the independent reference the FAISS index is tested against.
    """
    a, b = as_codes(a), as_codes(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"code widths differ: {a.shape[1]} and {b.shape[1]} bytes")
    xor = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return _POPCOUNT[xor].sum(axis=2, dtype=np.int64)


def to_hex(code: np.ndarray) -> str:
    """One packed code (B,) -> lowercase hex string of 2B characters."""
    return np.asarray(code, dtype=np.uint8).tobytes().hex()


def parse(text: str, hash_bits: int) -> np.ndarray:
    """Parse a code given as hex (K/4 chars) or a 0/1 string (K chars) into a (1, K/8) array.

    Raises ValueError naming the expected lengths when ``text`` fits neither.
    """
    if not isinstance(text, str):
        raise TypeError(f"code must be a string; got {type(text).__name__}")
    s = text.strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    if len(s) == hash_bits and set(s) <= {"0", "1"}:
        return pack(np.array([[c == "1" for c in s]]))
    if len(s) == hash_bits // 4:
        # bytes.fromhex skips spaces, which would give a code of the wrong width
        if not set(s) <= _HEX_DIGITS:
            raise ValueError(f"code {text!r} is not valid hex")
        return np.frombuffer(bytes.fromhex(s), dtype=np.uint8).reshape(1, -1).copy()
    raise ValueError(
        f"code must be {hash_bits // 4} hex digits or {hash_bits} binary digits for "
        f"{hash_bits}-bit codes; got {len(s)} characters"
    )
