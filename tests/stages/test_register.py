"""Choosing the champion and the best MLP (stages/register.py): by validation accuracy, never by test accuracy."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import mlflow
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


def write_keras(path: Path, layers: list[str], weights: str = "") -> Path:
    """A .keras archive holding only what model_kind reads: config.json naming the layer classes."""
    config = {"class_name": "Sequential", "config": {"layers": [{"class_name": c, "config": {}} for c in layers]}}
    with zipfile.ZipFile(path, "w") as archive:  # fixed dates: the same content gives the same SHA-256
        archive.writestr(zipfile.ZipInfo("config.json", (1980, 1, 1, 0, 0, 0)), json.dumps(config))
        weights_file = zipfile.ZipInfo("model.weights.h5", (1980, 1, 1, 0, 0, 0))
        archive.writestr(weights_file, path.name + weights)  # a different hash per model
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


class Store:
    """A real MLflow registry in a temporary SQLite store. The stand-ins: each model file's training
    run is made here (tagged as train tags it), and the pyfunc logging (TensorFlow, seconds) is a text
    artifact; register's choosing, versions, aliases, gate and tags are the real ones."""

    def __init__(self, tmp_path: Path, monkeypatch, uri: str):

        from fashion_mlp import serving, tracking

        self.root = tmp_path
        self.uri = uri  # conftest's mlflow_store: a new store in tmp_path
        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.uri)
        self.experiment_id = tracking.init("e")

        code = tmp_path / "echo_model.py"  # a model from code, as serving logs one, without TensorFlow
        code.write_text(
            "import mlflow\n\n\nclass Echo(mlflow.pyfunc.PythonModel):\n"
            "    def predict(self, context, model_input, params=None):\n        return model_input\n\n\n"
            "mlflow.models.set_model(Echo())\n"
        )

        export = tmp_path / "model.onnx"  # the ONNX export's place in a logged version, as serving logs it
        export.write_text("a stand-in")

        def log_model(model_path, name="image_model"):
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(code),
                artifacts={serving.ONNX_ARTIFACT: str(export)},
                pip_requirements=["mlflow"],
            )

        monkeypatch.setattr(serving, "log_model", log_model)
        self.monkeypatch = monkeypatch
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)

    def run(self, candidates: dict, kinds: dict, tag: str = "", data: str = "data-1", extra: list | None = None):
        """One `register` over these candidates, whose model files hold `tag` (a new tag: new files)."""

        models, paths = self.root / f"models{tag}", []
        models.mkdir(exist_ok=True)
        for name, m in candidates.items():
            path = write_keras(models / f"{name}.keras", CNN_LAYERS if kinds[name] == "cnn" else MLP_LAYERS, tag)
            tags = {"model_sha256": sha256_file(path), "data_sha256": data, "model": name}
            with mlflow.start_run(experiment_id=self.experiment_id, tags=tags):
                pass
            paths.append(self.root / f"{name}{tag}.json")
            paths[-1].write_text(json.dumps(m))
        out, decisions = self.root / "champion.json", self.root / "registry.json"
        flags = ["--experiment", "e", "--registered_model", "m", "--promotion_tolerance", "0.002"]
        flags += ["--models_dir", str(models), "--out", str(out), "--decisions_out", str(decisions)]
        register.main([*flags, *(extra or []), "--metrics", *map(str, paths)])
        return json.loads(out.read_text()), json.loads(decisions.read_text())["decisions"]

    def aliases(self) -> dict[str, str]:
        return {a: self.client.get_model_version_by_alias("m", a).tags["model"] for a in ("champion", "best-mlp")}

    def versions(self) -> int:
        return len(self.client.search_model_versions("name = 'm'"))

    def pickled(self, version: str) -> None:
        """Make `version` look like one logged before today's serving: a pickled pyfunc, or one without ONNX."""

        from fashion_mlp import registry

        original = registry.is_current_model
        self.monkeypatch.setattr(registry, "is_current_model", lambda name, v: str(v) != version and original(name, v))


def outcomes(decisions: list[dict]) -> dict[str, str]:
    return {d["alias"]: d["outcome"] for d in decisions}


def test_register_gives_the_best_mlp_its_own_version_when_a_cnn_is_champion(tmp_path, monkeypatch, mlflow_store):
    store = Store(tmp_path, monkeypatch, mlflow_store)
    champion, decisions = store.run(CANDIDATES, KINDS)
    assert store.aliases() == {"champion": "cnn", "best-mlp": "tuned"} and store.versions() == 2
    assert outcomes(decisions) == {"champion": "promoted", "best-mlp": "promoted"}
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


def test_an_mlp_champion_is_registered_once_with_both_aliases(tmp_path, monkeypatch, mlflow_store):
    store = Store(tmp_path, monkeypatch, mlflow_store)
    candidates = {k: v for k, v in CANDIDATES.items() if k != "cnn"}
    champion, _ = store.run(candidates, KINDS)
    assert store.aliases() == {"champion": "tuned", "best-mlp": "tuned"} and store.versions() == 1
    assert champion["champion"] == champion["best_mlp"]["model"] == "tuned"
    assert champion["model_sha256"] == champion["best_mlp"]["model_sha256"]


def test_the_gate_keeps_a_better_champion_moves_for_a_better_one_and_yields_to_force(
    tmp_path, monkeypatch, mlflow_store
):
    """A params edit that makes every model worse must not demote a good champion without a word;
    the same model again adds no version; a better one, or --force, takes the alias."""
    store = Store(tmp_path, monkeypatch, mlflow_store)
    store.run(CANDIDATES, KINDS)
    # The same files again (a --forceall rerun): no new version, nothing moves.
    _, decisions = store.run(CANDIDATES, KINDS)
    assert store.versions() == 2 and outcomes(decisions) == {"champion": "unchanged", "best-mlp": "unchanged"}

    worse = {name: m | {"val_accuracy": m["val_accuracy"] - 0.01} for name, m in CANDIDATES.items()}
    _, decisions = store.run(worse, KINDS, tag="worse")
    assert store.aliases() == {"champion": "cnn", "best-mlp": "tuned"}, "a worse run demoted the champion"
    assert outcomes(decisions) == {"champion": "kept", "best-mlp": "kept"} and store.versions() == 4
    new = store.client.get_model_version("m", decisions[0]["version"])
    tag = new.tags["promotion_champion"]
    assert tag.startswith("kept: validation accuracy 0.9200 against 0.9300 of cnn (version 1)"), tag

    within = {name: m | {"val_accuracy": m["val_accuracy"] - 0.001} for name, m in CANDIDATES.items()}
    _, decisions = store.run(within, KINDS, tag="within")  # retraining noise: within the tolerance
    assert outcomes(decisions) == {"champion": "promoted", "best-mlp": "promoted"}

    _, decisions = store.run(worse, KINDS, tag="forced", extra=["--force"])
    assert outcomes(decisions) == {"champion": "forced", "best-mlp": "forced"}
    assert store.client.get_model_version_by_alias("m", "champion").tags["promotion_champion"].startswith("forced")


def test_a_pickled_version_of_the_same_file_is_logged_again_as_code_and_takes_its_aliases(
    tmp_path, monkeypatch, mlflow_store
):
    store = Store(tmp_path, monkeypatch, mlflow_store)
    store.run(CANDIDATES, KINDS)
    store.pickled("1")  # the cnn's version, as logged before the serving change
    _, decisions = store.run(CANDIDATES, KINDS)
    assert store.versions() == 3 and outcomes(decisions) == {"champion": "promoted", "best-mlp": "unchanged"}
    assert "logged again as code" in decisions[0]["reason"]
    assert str(store.client.get_model_version_by_alias("m", "champion").version) == "3"


def test_the_gate_does_not_compare_models_trained_on_other_data(tmp_path, monkeypatch, mlflow_store):
    store = Store(tmp_path, monkeypatch, mlflow_store)
    store.run(CANDIDATES, KINDS)
    better = {name: m | {"val_accuracy": m["val_accuracy"] + 0.01} for name, m in CANDIDATES.items()}
    _, decisions = store.run(better, KINDS, tag="other", data="data-2")
    assert outcomes(decisions) == {"champion": "kept", "best-mlp": "kept"}
    assert "trained on other data" in decisions[0]["reason"] and "--force" in decisions[0]["reason"]
    monkeypatch.setenv("FASHION_MLP_FORCE_PROMOTION", "1")  # what `FASHION_MLP_FORCE_PROMOTION=1 dvc repro` gives
    _, decisions = store.run(better, KINDS, tag="other", data="data-2")
    assert outcomes(decisions) == {"champion": "forced", "best-mlp": "forced"}


def test_a_temporary_dvc_experiment_registers_its_models_but_moves_no_alias(tmp_path, monkeypatch, mlflow_store):
    """A preset or a queued sweep runs in a copy under .dvc/tmp/exps/, its runs in the workspace's store (DVC
    points DVC_ROOT at the workspace): a better model there must not change what `make serve` serves before
    the experiment is applied. Its versions are made, and their tags say what the gate decided."""
    store = Store(tmp_path, monkeypatch, mlflow_store)
    store.run(CANDIDATES, KINDS)
    better = {name: m | {"val_accuracy": m["val_accuracy"] + 0.01} for name, m in CANDIDATES.items()}
    copy = tmp_path / ".dvc/tmp/exps/tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.setenv("DVC_EXP_NAME", "mlp-distilled")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(copy)
    _, decisions = store.run(better, KINDS, tag="experiment")
    assert outcomes(decisions) == {"champion": "held", "best-mlp": "held"} and store.versions() == 4
    assert store.aliases() == {"champion": "cnn", "best-mlp": "tuned"}
    assert [store.client.get_model_version_by_alias("m", a).version for a in ("champion", "best-mlp")] == [1, 2]
    tag = store.client.get_model_version("m", decisions[0]["version"]).tags["promotion_champion"]
    assert tag.startswith("held: DVC experiment 'mlp-distilled' ran in a temporary copy, which moves no alias"), tag
    assert "(the gate: promoted, validation accuracy 0.9400 against 0.9300" in tag, tag
    assert "`dvc exp apply mlp-distilled`, `dvc repro -f -s register`" in tag, tag

    # `dvc exp run` without --temp runs in the workspace, whose outputs it changes: the gate applies there.
    monkeypatch.chdir(tmp_path)
    _, decisions = store.run(better, KINDS, tag="experiment")
    assert outcomes(decisions) == {"champion": "promoted", "best-mlp": "promoted"} and store.versions() == 4
    assert [store.client.get_model_version_by_alias("m", a).version for a in ("champion", "best-mlp")] == [3, 4]


def test_without_an_mlp_the_best_mlp_alias_stays_where_it_is(tmp_path, monkeypatch, mlflow_store):
    store = Store(tmp_path, monkeypatch, mlflow_store)
    store.run(CANDIDATES, KINDS)
    champion, decisions = store.run({"cnn": CANDIDATES["cnn"]}, KINDS)
    assert champion["best_mlp"] is None and outcomes(decisions) == {"champion": "unchanged"}
    assert store.aliases() == {"champion": "cnn", "best-mlp": "tuned"}


def check_registry_aliases(repo: Path) -> None:
    """For the end-to-end runs (issue 14): the store in `repo` (mlflow.db) has both aliases, each on the version
    of the model champion.json names, tagged with its kind and hash; one version when they are the same model."""

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
