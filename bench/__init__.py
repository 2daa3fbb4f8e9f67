"""Benchmarks, not tests: ``python -m bench [NAME ...]`` runs ``bench_*.py`` ``main()``s."""
