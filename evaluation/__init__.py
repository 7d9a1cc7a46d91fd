"""The experiments of Huang et al. 2022 (Sec. 5), reproduced: ``evaluation.run`` is the entry point.

``protocol`` draws the query sample and its targets (label vectors on multi-label data) and
scores t-MAP, ``models`` loads or trains the models evaluated, ``bench`` holds the shared
workbench (database codes, memoised attack runs), ``report`` the CSV / Markdown / plot writers
and the paper's published numbers, ``tables`` Tables 1-3, ``convergence`` Figure 2, ``scale``
the convergence-versus-output-size test of the paper's 20x claim, ``figures`` Figures 3-4,
``gradcam`` and ``obfuscation`` what Figures 3 and 4 compare with.
"""
