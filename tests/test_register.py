"""Choosing the champion and the best MLP (stages/register.py): by validation accuracy, never by test accuracy."""

from __future__ import annotations

import json
import types
import zipfile
from pathlib import Path
from typing import ClassVar

import pytest

from fashion_mlp import PipelineError
from fashion_mlp.io import sha256_file
from fashion_mlp.stages import register


@pytest.mark.parametrize(
    "scores, winner",
    [
        ({"baseline": 0.89, "regularized": 0.91, "tuned": 0.905}, "regularized"),
        ({"baseline": 0.90, "regularized": 0.90, "tuned": 0.89}, "baseline"),  # tie: fewer parameters
    ],
)
def test_champion_is_the_best_validation_accuracy(scores, winner):
    # Test accuracy is deliberately the reverse order: it must not matter.
    candidates = {m: {"val_accuracy": v, "accuracy": 1 - v, "params": len(m)} for m, v in scores.items()}
    assert register.choose(candidates) == winner


def test_a_tie_goes_to_the_smaller_model_then_the_name_whatever_the_listing_order():
    tied = {
        "wide": {"val_accuracy": 0.9, "params": 900_000},
        "small": {"val_accuracy": 0.9, "params": 50_000},
        "also_small": {"val_accuracy": 0.9, "params": 50_000},
    }
    assert register.choose(tied) == "also_small"
    assert register.choose(dict(reversed(tied.items()))) == "also_small"


def write_keras(path: Path, layers: list[str]) -> Path:
    """A .keras archive holding only what model_kind reads: config.json naming the layer classes."""
    config = {"class_name": "Sequential", "config": {"layers": [{"class_name": c, "config": {}} for c in layers]}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", path.name)  # a different hash per model
    return path


MLP_LAYERS = ["InputLayer", "Flatten", "Dense", "Dropout", "Dense"]
CNN_LAYERS = ["InputLayer", "Reshape", "Conv2D", "MaxPooling2D", "Conv2D", "Flatten", "Dense"]


def test_model_kind_is_read_from_the_saved_model(tmp_path):
    assert register.model_kind(write_keras(tmp_path / "a.keras", MLP_LAYERS)) == "mlp"
    assert register.model_kind(write_keras(tmp_path / "b.keras", CNN_LAYERS)) == "cnn"
    nested = ["InputLayer", "Sequential", "Dense"]  # a sub-model's layers count too
    path = write_keras(tmp_path / "c.keras", nested)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    config["config"]["layers"][1]["config"] = {"layers": [{"class_name": "Conv2D"}, {"class_name": "Dense"}]}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    assert register.model_kind(path) == "cnn"
    # A layer no kind of the registry builds is an error naming the kinds, never a silent "mlp"
    # (which could then win best-mlp).
    odd = write_keras(tmp_path / "odd.keras", ["InputLayer", "Flatten", "MyCustomLayer", "Dense"])
    with pytest.raises(
        PipelineError, match=r"odd\.keras: its layers .*MyCustomLayer.* match no model kind.*mlp: .*cnn: "
    ):
        register.model_kind(odd)
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(PipelineError, match=r"bad\.keras: cannot read the model's config\.json"):
        register.model_kind(tmp_path / "bad.keras")
    with pytest.raises(PipelineError, match=r"gone\.keras"):
        register.model_kind(tmp_path / "gone.keras")


CANDIDATES = {
    "baseline": {"model": "baseline", "val_accuracy": 0.895, "accuracy": 0.882, "params": 101_770},
    "tuned": {"model": "tuned", "val_accuracy": 0.917, "accuracy": 0.903, "params": 900_000},
    "regularized": {"model": "regularized", "val_accuracy": 0.905, "accuracy": 0.894, "params": 235_000},
    "cnn": {"model": "cnn", "val_accuracy": 0.930, "accuracy": 0.925, "params": 90_000},
}
KINDS = {"baseline": "mlp", "tuned": "mlp", "regularized": "mlp", "cnn": "cnn"}


def test_best_mlp_is_the_best_mlp_by_validation_accuracy_when_a_cnn_is_champion():
    assert register.choices(CANDIDATES, KINDS) == ("cnn", "tuned")
    # Test accuracy plays no part: the MLP best on test but not on validation is not chosen.
    swapped = CANDIDATES | {"regularized": CANDIDATES["regularized"] | {"accuracy": 0.99}}
    assert register.choices(swapped, KINDS) == ("cnn", "tuned")
    mlp_wins = CANDIDATES | {"cnn": CANDIDATES["cnn"] | {"val_accuracy": 0.91}}
    assert register.choices(mlp_wins, KINDS) == ("tuned", "tuned")
    assert register.choices({"cnn": CANDIDATES["cnn"]}, {"cnn": "cnn"}) == ("cnn", None)


def test_a_missing_or_garbled_metrics_file_is_named(tmp_path):
    with pytest.raises(PipelineError, match=r"missing\.json: cannot read the metrics JSON"):
        register.read_candidates([tmp_path / "missing.json"])
    (tmp_path / "garbled.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"garbled\.json: cannot read the metrics JSON"):
        register.read_candidates([tmp_path / "garbled.json"])
    (tmp_path / "partial.json").write_text(json.dumps({"model": "x", "accuracy": 0.9}))
    with pytest.raises(PipelineError, match=r"partial\.json: not a metrics JSON from evaluate \(missing val_acc"):
        register.read_candidates([tmp_path / "partial.json"])


class FakeClient:
    """The registry calls register makes after its versions exist, recorded."""

    aliases: ClassVar[dict[str, str]] = {}

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version

    def get_registered_model(self, name):
        return types.SimpleNamespace(aliases=dict(self.aliases))

    def delete_registered_model_alias(self, name, alias):
        del self.aliases[alias]


def run_register(tmp_path, monkeypatch, candidates: dict, kinds: dict) -> tuple[dict, list[str]]:
    """register.main on synthetic metrics and model files, with a fake registry; (champion.json, registered models)."""
    import mlflow

    from fashion_mlp import tracking

    models, paths, registered = tmp_path / "models", [], []
    models.mkdir(exist_ok=True)
    for name, m in candidates.items():
        write_keras(models / f"{name}.keras", CNN_LAYERS if kinds[name] == "cnn" else MLP_LAYERS)
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(m))

    def fake_register_version(experiment_id, registered_model, model_path, tags):
        registered.append(model_path.stem)
        assert tags["kind"] == kinds[model_path.stem] and tags["model"] == model_path.stem
        return types.SimpleNamespace(version=str(len(registered)))

    monkeypatch.setattr(register, "register_version", fake_register_version)
    monkeypatch.setattr(tracking, "init", lambda experiment: "0")
    monkeypatch.setattr(mlflow, "MlflowClient", FakeClient)
    out = tmp_path / "champion.json"
    flags = ["--experiment", "e", "--registered_model", "m", "--models_dir", str(models), "--out", str(out)]
    register.main([*flags, "--metrics", *map(str, paths)])
    return json.loads(out.read_text()), registered


def test_register_gives_the_best_mlp_its_own_version_when_a_cnn_is_champion(tmp_path, monkeypatch):
    FakeClient.aliases = {}
    champion, registered = run_register(tmp_path, monkeypatch, CANDIDATES, KINDS)
    assert registered == ["cnn", "tuned"] and FakeClient.aliases == {"champion": "1", "best-mlp": "2"}
    assert (champion["champion"], champion["kind"]) == ("cnn", "cnn")
    assert champion["best_mlp"]["model"] == "tuned" and champion["best_mlp"]["kind"] == "mlp"
    assert champion["best_mlp"]["alias"] == "best-mlp"
    assert champion["best_mlp"]["model_sha256"] == sha256_file(tmp_path / "models/tuned.keras")
    reason = "highest validation accuracy (0.9170) among the MLPs tuned, regularized, baseline"
    assert champion["best_mlp"]["reason"] == reason
    assert [(c["model"], c["kind"]) for c in champion["candidates"]] == [
        ("cnn", "cnn"), ("tuned", "mlp"), ("regularized", "mlp"), ("baseline", "mlp")
    ]  # fmt: skip
    assert "version" not in json.dumps(champion) and "run" not in json.dumps(champion)


def test_an_mlp_champion_is_registered_once_with_both_aliases(tmp_path, monkeypatch):
    FakeClient.aliases = {}
    candidates = {k: v for k, v in CANDIDATES.items() if k != "cnn"}
    champion, registered = run_register(tmp_path, monkeypatch, candidates, KINDS)
    assert registered == ["tuned"] and FakeClient.aliases == {"champion": "1", "best-mlp": "1"}
    assert champion["champion"] == champion["best_mlp"]["model"] == "tuned"
    assert champion["model_sha256"] == champion["best_mlp"]["model_sha256"]


def test_without_an_mlp_a_stale_best_mlp_alias_is_removed(tmp_path, monkeypatch):
    FakeClient.aliases = {"champion": "7", "best-mlp": "6"}
    champion, registered = run_register(tmp_path, monkeypatch, {"cnn": CANDIDATES["cnn"]}, KINDS)
    assert registered == ["cnn"] and FakeClient.aliases == {"champion": "1"}
    assert champion["best_mlp"] is None


def check_registry_aliases(repo: Path) -> None:
    """For the end-to-end runs (issue 14): the store in `repo` (mlflow.db) has both aliases, each on the version
    of the model champion.json names, tagged with its kind and hash; one version when they are the same model."""
    import mlflow

    champion = json.loads((repo / "reports/champion.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    name = champion["registered_model"]
    versions = {}
    for entry in (champion, champion["best_mlp"]):
        alias, model = entry["alias"], entry.get("model", entry.get("champion"))
        version = client.get_model_version_by_alias(name, alias)
        assert version.tags["model"] == model and version.tags["kind"] == entry["kind"], (alias, version.tags)
        assert version.tags["model_sha256"] == entry["model_sha256"] == sha256_file(repo / f"models/{model}.keras")
        versions[alias] = version.version
    assert champion["best_mlp"]["kind"] == "mlp"
    same = champion["champion"] == champion["best_mlp"]["model"]
    assert (versions["champion"] == versions["best-mlp"]) == same, versions
