"""Reports from a results store (they only read it).

- ``aggregates``: stored rows -> de-duplicated groups -> the paper's statistics;
- ``figures``: the report's matplotlib figures;
- ``report``: the markdown table, ``summary.json`` and ``report.md``.
"""
