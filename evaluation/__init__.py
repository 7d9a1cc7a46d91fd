"""The experiments of Huang et al. 2022 (Sec. 5), reproduced: ``evaluation.run`` is the entry point.

``bench`` holds the shared protocol (models per bit length, database codes, the seeded query
sample and its targets, memoised attack runs), ``report`` the CSV / Markdown / plot writers and
the paper's published numbers, ``tables`` Tables 1-3, ``figures`` Figures 2-4, ``gradcam`` and
``obfuscation`` what Figures 3 and 4 compare with.
"""
