"""Explanations as numbers and figures, no files or MLflow: SHAP and LRP maps (methods.py, lrp.py),
the checks that say whether to trust them (checks.py), and their figures (figures.py)."""
