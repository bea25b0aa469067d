"""params.yaml: loading, per-layer values, the project root and the `check` stage.

The schema's refusals are in test_config_validate.py, the flags in test_config_flags.py."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from conftest import REPO
from fashion_mlp import PipelineError
from fashion_mlp.config import (
    PACKAGE_DIR,
    ParamsError,
    flatten,
    load_params,
    per_layer,
    project_root,
)

PARAMS_PATH = REPO / "params.yaml"


# --- load_params -----------------------------------------------------------------------


def test_load_params_accepts_repo_params(real_params):
    loaded = load_params(PARAMS_PATH)
    assert loaded == real_params
    assert {"seed", "data", "prepare", "train", "evaluate", "mlflow"} <= set(loaded)
    assert {"baseline", "regularized"} <= set(loaded["train"])


def test_load_params_relative_path(monkeypatch, tmp_path, real_params):
    """A relative path is read from the working directory, not from the repository."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(dict(real_params, seed=real_params["seed"] + 1)))
    monkeypatch.chdir(tmp_path)
    assert load_params("params.yaml") == dict(real_params, seed=real_params["seed"] + 1)


def test_load_params_missing_file(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match="file not found") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_load_params_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [1, 2\ndata: {")
    with pytest.raises(ParamsError, match="not valid YAML") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_load_params_reports_source_and_bad_key(tmp_path, real_params):
    broken = copy.deepcopy(real_params)
    broken["evaluate"]["grid_images"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "'evaluate.grid_images' = 0" in str(info.value)


def test_params_error_is_pipeline_and_value_error():
    assert issubclass(ParamsError, PipelineError) and issubclass(ParamsError, ValueError)


# --- per_layer and flatten -------------------------------------------------------------


def test_per_layer_broadcasts_and_checks_length():
    assert per_layer(0.2, 3, "dropout") == [0.2, 0.2, 0.2]
    assert per_layer([0.2], 3, "dropout") == [0.2, 0.2, 0.2]
    assert per_layer([0.1, 0.2], 2, "dropout") == [0.1, 0.2]
    assert per_layer((False, True), 2, "batchnorm") == [False, True]
    with pytest.raises(ParamsError, match=r"x.dropout has 2 values but hidden has 3 layers"):
        per_layer([0.1, 0.2], 3, "x.dropout")


def test_flatten_dotted_keys_keeps_lists():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


# --- project_root ----------------------------------------------------------------------


@pytest.fixture
def clean_root_env(monkeypatch):
    monkeypatch.delenv("FASHION_MLP_ROOT", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return monkeypatch


def test_project_root_honours_fashion_mlp_root(clean_root_env, tmp_path):
    clean_root_env.setenv("FASHION_MLP_ROOT", str(tmp_path))
    clean_root_env.setenv("DVC_ROOT", str(REPO))
    assert project_root() == tmp_path.resolve()


def test_project_root_falls_back_to_dvc_root(clean_root_env, tmp_path):
    clean_root_env.setenv("DVC_ROOT", str(tmp_path))
    assert project_root() == tmp_path.resolve()


def test_project_root_finds_markers_above_cwd(clean_root_env, tmp_path):
    for marker in ("params.yaml", "dvc.yaml", "Snakefile"):
        (tmp_path / marker).write_text("")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    clean_root_env.chdir(nested)
    assert project_root() == tmp_path.resolve()


def test_project_root_without_markers_uses_package_checkout(clean_root_env, tmp_path):
    (tmp_path / "params.yaml").write_text("")  # only one marker: not a root
    clean_root_env.chdir(tmp_path)
    assert project_root() == PACKAGE_DIR.parents[1]


def test_the_check_stage_refuses_a_bad_file_by_key_and_writes_nothing(tmp_path, params):
    """DVC's first stage: every other stage depends on its output, so a refused edit stops the run
    before DVC removes any stage's outputs (test_e2e_dvc.py shows it end to end)."""
    from fashion_mlp.stages import check

    out = tmp_path / "params_check.json"
    params["train"]["baseline"]["dropout"] = 1.5
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"'train\.baseline\.dropout' = 1\.5 is not allowed"):
        check.main(["--params", str(bad), "--out", str(out)])
    assert not out.exists()
    check.main(["--params", str(PARAMS_PATH), "--out", str(out)])
    first = out.read_bytes()
    assert json.loads(first) == {  # that the file passed, and against what: none of its values
        "params": str(PARAMS_PATH),
        "valid": True,
        "checked_against": ["workflow/schemas/params.schema.yaml", "the kinds' registry"],
    }
    params["train"]["baseline"]["dropout"] = 0.25  # another valid value: the same bytes, nothing reruns
    bad.write_text(yaml.safe_dump(params))
    check.main(["--params", str(bad), "--out", str(out)])
    assert out.read_bytes() == first.replace(str(PARAMS_PATH).encode(), str(bad).encode())
