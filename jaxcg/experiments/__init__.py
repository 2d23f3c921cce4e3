"""End-to-end experiments that reproduce the seed paper's claims on real OpenMM data.

They sit on top of the pipeline (maps → models → train → analysis) and are used by
``jaxcg demo`` and the ``benchmarks/paper_*.py`` scripts.
"""
