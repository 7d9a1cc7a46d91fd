"""The paper's experiments (Huang et al. 2022, Sec. 5), one plain function each.

``bench`` holds the shared protocol (models per bit length, database codes, the seeded query
sample and its targets, memoised attack runs), ``report`` the CSV / Markdown / plot writers and
the paper's published numbers, ``tables`` Tables 1-3 and ``figures`` Figures 2-4. The public
entry point is :mod:`privacy.evaluation`.
"""
