"""Everything that reads results and shows them, apart from the suites that make them (as
etcd's tests/robustness keeps ``report/``): the failover suite's summaries (``summary``),
the results folder read as data (``results``), the report page and its plots (``page``,
``plots``), the matrix that runs every mode x check (``matrix``), and the merge of CI's
per-mode folders (``combine``)."""
