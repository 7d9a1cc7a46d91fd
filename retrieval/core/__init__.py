"""The hashing core everyone shares: config, codes, pixels, the hash model, metrics.

No Flask, no SQL, no FAISS here: this is what the user's client may import.
"""
