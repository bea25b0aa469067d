"""The sections of reports/summary.md, one module per section; `fashion-mlp report` puts them in order.

Markdown and figures only: the numbers come from the stages' JSON and CSV files.
"""
