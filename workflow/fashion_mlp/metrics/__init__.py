"""What is measured of a model: its row in the summary (columns.py), bootstrap intervals and exact
McNemar tests (stats.py), calibration and temperature scaling (calibration.py), and its answers on
photo-like pictures (robustness.py)."""
