"""models/distillation.py and distill: entries: the loss as Hinton et al. define it, a teacher that never
learns, a student saved alone, and the train stage's checks of a student's teacher."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from test_model_kinds import TINY_CNN, TRAINING

from fashion_mlp.io import sha256_file
from fashion_mlp.stages import train as train_stage

STUDENT = {
    "hidden": [16],
    "activation": "relu",
    "dropout": 0.1,
    "l2": 0.001,
    "batchnorm": True,
    **TRAINING,
    "augment": {"shift": 1, "flip": True},
    "teacher": {"model": "cnn", "temperature": 3.0, "alpha": 0.7},
}


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.fixture(scope="module")
def distillation(keras):
    from fashion_mlp.models import distillation

    return distillation


@pytest.mark.parametrize("alpha, temperature, smoothing", [(0.0, 4.0, 0.0), (1.0, 1.0, 0.0), (0.7, 3.0, 0.1)])
def test_the_loss_is_hintons_computed_by_hand(distillation, alpha, temperature, smoothing):
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    labels = rng.integers(0, 10, size=5)
    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    soft = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1) * temperature**2
    targets = np.eye(10)[labels] * (1 - smoothing) + smoothing / 10
    hard = -(targets * np.log(softmax(student))).sum(axis=1)
    expected = np.mean(alpha * soft + (1 - alpha) * hard)
    got = distillation.distillation_loss(
        labels, student.astype("float32"), teacher.astype("float32"), temperature, alpha, smoothing
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_mixed_labels_weigh_each_labels_cross_entropy_by_lam(distillation):
    rng = np.random.default_rng(3)
    student = (rng.normal(size=(6, 10)) * 2).astype("float32")
    labels, others = rng.integers(0, 10, size=6), rng.integers(0, 10, size=6)
    lam = rng.random(6).astype("float32")
    log_p = np.log(softmax(student))
    hard = lam * -log_p[np.arange(6), labels] + (1 - lam) * -log_p[np.arange(6), others]
    got = distillation.distillation_loss(labels, student, student, 2.0, 0.0, mixed=(lam, others))
    assert float(got) == pytest.approx(hard.mean(), rel=1e-5)


def test_mix_blends_each_image_with_a_partner_from_the_batch_the_same_way_each_time(keras, distillation):
    x = np.random.default_rng(4).random((8, 28, 28)).astype("float32")
    labels = np.arange(8)

    def draw():
        return [np.asarray(a) for a in distillation.mix(x, labels, 0.4, keras.random.SeedGenerator(7))]

    mixed, lam, others = draw()
    assert mixed.shape == x.shape and lam.shape == (8,) and ((lam >= 0) & (lam <= 1)).all()
    assert sorted(others) == list(range(8))  # a shuffle: every image is somebody's partner
    expected = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[others]
    np.testing.assert_allclose(mixed, expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(draw(), (mixed, lam, others), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_student_that_matches_its_teacher_has_no_soft_loss(distillation):
    logits = np.random.default_rng(1).normal(size=(4, 10)).astype("float32") * 5
    assert float(distillation.distillation_loss(np.zeros(4), logits, logits, 4.0, 1.0)) == pytest.approx(0, abs=1e-6)


def test_logits_are_the_models_own_before_its_softmax(keras, models, distillation):
    keras.utils.set_random_seed(0)
    model = models.build_model(TINY_CNN, name="t")
    x = np.random.default_rng(2).random((6, 28, 28)).astype("float32")
    logits = np.asarray(distillation.Logits(model)(x, training=False))
    np.testing.assert_allclose(softmax(logits), model.predict(x, verbose=0), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_student_learns_from_a_teacher_that_does_not_change_and_is_saved_alone(keras, models, tmp_path):
    """A short distillation with every lever (mixup too): the teacher's weights are untouched, the student's file
    holds only its own inference layers and is the same bytes twice, and its history reads like any other."""
    from test_train import synthetic_data

    from fashion_mlp.models.training import fit, make_history_callback

    data = synthetic_data(64, 32)
    keras.utils.set_random_seed(0)
    teacher = models.build_model(TINY_CNN, name="cnn")
    before = [w.copy() for w in teacher.get_weights()]
    block = dict(STUDENT, ema=0.9, label_smoothing=0.1, teacher=dict(STUDENT["teacher"], mixup=0.4))

    def train(path):
        keras.backend.clear_session()  # the same layer names the second time
        keras.utils.set_random_seed(0)
        student = models.build_model(block, name="student")
        history = make_history_callback()
        fit(student, data, block, [history], seed=0, teacher=teacher)
        models.save_model(student, path)
        return student, history

    student, history = train(tmp_path / "a.keras")
    train(tmp_path / "b.keras")
    assert sha256_file(tmp_path / "a.keras") == sha256_file(tmp_path / "b.keras")
    for old, new in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert len(history.rows) == 2 and all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in history.rows)
    predicted = student.predict(data["x_val"], verbose=0).argmax(axis=1)
    assert float(np.mean(predicted == data["y_val"])) == pytest.approx(history.rows[-1]["val_accuracy"])
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    assert {layer["class_name"] for layer in layers} <= {
        "InputLayer",
        "Flatten",
        "Dense",
        "BatchNormalization",
        "Dropout",
    }


@pytest.mark.slow  # trains four students: 6 s
def test_the_alpha_weighs_teacher_against_labels(keras, models):
    """alpha 0 trains on the labels alone: the teacher's outputs cannot change the student."""
    from test_train import synthetic_data

    from fashion_mlp.models.training import fit, make_history_callback

    data = synthetic_data(32, 16)

    def student_weights(teacher_seed: int, alpha: float):
        keras.utils.set_random_seed(teacher_seed)
        teacher = models.build_model(TINY_CNN, name="cnn")
        keras.utils.set_random_seed(0)
        block = dict(STUDENT, epochs=1, teacher={"model": "cnn", "temperature": 2.0, "alpha": alpha})
        student = models.build_model(block, name="student")
        fit(student, data, block, [make_history_callback()], seed=0, teacher=teacher)
        return student.get_weights()

    for a, b in zip(student_weights(1, 0.0), student_weights(2, 0.0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(student_weights(1, 0.5), student_weights(2, 0.5), strict=True))


def test_the_train_stage_needs_a_students_teacher_and_only_a_students(tmp_path):
    plain = {key: value for key, value in STUDENT.items() if key != "teacher"}
    with pytest.raises(SystemExit, match=r"distill\.student has a teacher \(cnn\): pass --teacher_path"):
        train_stage.check_teacher(STUDENT, None, "student")
    with pytest.raises(SystemExit, match=r"--teacher_path .*t\.keras given, but train\.baseline has no teacher"):
        train_stage.check_teacher(plain, tmp_path / "t.keras", "baseline")
    with pytest.raises(SystemExit, match=r"the teacher's model .*missing\.keras does not exist: train cnn first"):
        train_stage.check_teacher(STUDENT, tmp_path / "missing.keras", "student")
    train_stage.check_teacher(plain, None, "baseline")


def test_params_refuse_a_teacher_outside_distill_and_a_student_without_a_known_teacher():
    from conftest import REPO
    from fashion_mlp.config import ParamsError, load_params, validate

    params = load_params(REPO / "params.yaml")
    block = dict(params["train"]["baseline"])
    teacher = {"model": "cnn", "temperature": 4, "alpha": 0.9}
    cases = [
        ({"distill": {"s": dict(block, teacher={"model": "resnet", "temperature": 4, "alpha": 0.9})}},
         r"distill\.s\.teacher\.model: 'resnet' is no entry of train: \(the teachers: baseline, regularized, cnn\)"),
        ({"distill": {"cnn": dict(block, teacher={"model": "baseline", "temperature": 4, "alpha": 0.9})}},
         r"distill\.cnn: the name 'cnn' is taken"),
        ({"distill": {"s": block}}, r"distill\.s.*teacher"),
        ({"train": dict(params["train"], baseline=dict(block, teacher=teacher))},
         r"train\.baseline\.teacher: a model with a teacher goes under distill:"),
        ({"distill": {"s": dict(block, teacher={"model": "cnn", "temperature": 0.5, "alpha": 0.9})}},
         r"distill\.s\.teacher\.temperature' = 0\.5 is not allowed"),
    ]  # fmt: skip
    for change, message in cases:
        with pytest.raises(ParamsError, match=message):
            validate({**params, **change})


def test_the_views_flip_and_shift_with_zeros_filling_in():
    """2 x 3 x 3 views, the image itself among them, each a flip and a move whose vacated pixels are zero."""
    from fashion_mlp.models.views import apply_view, views

    all_views = views(1, flip=True)
    assert len(all_views) == len(set(all_views)) == 18 and (False, 0, 0) in all_views
    assert views(2, flip=False)[0] == (False, -2, -2) and len(views(2, flip=False)) == 25
    images = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28) + 1
    assert np.array_equal(apply_view(images, (False, 0, 0)), images)
    assert np.array_equal(apply_view(images, (True, 0, 0)), images[:, :, ::-1])
    moved = apply_view(images, (False, 1, -2))  # one row down, two columns left
    assert np.array_equal(moved[:, 1:, :26], images[:, :27, 2:])
    assert not moved[:, 0, :].any() and not moved[:, :, 26:].any()


def test_the_training_step_shows_each_image_in_the_view_its_table_row_scored(keras):
    """apply_views (TensorFlow, a view per image) is apply_view (NumPy, which built the table) for every view."""
    from fashion_mlp.models.views import apply_view, apply_views, views

    all_views = views(2, flip=True)
    rng = np.random.default_rng(0)
    images = rng.random((len(all_views) * 2, 28, 28), dtype=np.float32)
    chosen = np.tile(np.arange(len(all_views)), 2)
    shown = apply_views(images, chosen, all_views).numpy()
    for i, view in enumerate(chosen):
        np.testing.assert_array_equal(shown[i], apply_view(images[i : i + 1], all_views[view])[0])


def test_a_mirrored_table_averages_each_view_with_its_flipped_twin():
    from fashion_mlp.models.views import apply_view, mirrored, views

    all_views = views(1, flip=True)
    table = np.random.default_rng(1).random((len(all_views), 3, 10), dtype=np.float32)
    both = mirrored(table, all_views)
    image = np.random.default_rng(2).random((1, 28, 28))
    for i, (flipped, dy, dx) in enumerate(all_views):
        twin = all_views.index((not flipped, dy, -dx))
        np.testing.assert_allclose(both[i], (table[i] + table[twin]) / 2)
        # the twin is the view's picture flipped
        np.testing.assert_array_equal(apply_view(image, all_views[twin]), apply_view(image, all_views[i])[:, :, ::-1])
    with pytest.raises(ValueError, match=r"teacher\.views\.mirror needs teacher\.views\.flip"):
        mirrored(table[:9], views(1, flip=False))


def test_a_warp_moves_each_picture_by_its_own_smooth_field_of_the_asked_size():
    """Bilinear sampling is exact on a ramp, so warping the ramps x and y with the same draws gives each
    pixel's displacement back: of the asked root-mean-square size, different per picture, the same per seed."""
    from fashion_mlp.models.views import warp

    columns = np.broadcast_to(np.arange(28, dtype=np.float64), (64, 28, 28))
    rows = columns.transpose(0, 2, 1)
    inside = (slice(None), slice(6, 22), slice(6, 22))  # where no sample reaches the zero border
    for pixels in (0.7, 1.5):
        dx = warp(columns, pixels, 4, np.random.default_rng(3))[inside] - columns[inside]
        dy = warp(rows, pixels, 4, np.random.default_rng(3))[inside] - rows[inside]
        assert np.sqrt(np.mean(dx**2 + dy**2)) == pytest.approx(pixels, rel=0.25)
        assert not np.allclose(dx[0], dx[1])  # a field per picture
        assert np.abs(np.diff(dx, axis=2)).mean() < 0.3 * np.abs(dx).mean()  # smooth (unsmoothed noise: 1.3)
    np.testing.assert_array_equal(
        warp(columns, 1, 4, np.random.default_rng(3)), warp(columns, 1, 4, np.random.default_rng(3))
    )


@pytest.mark.parametrize("mirror", [False, True])
def test_warped_views_are_stored_beside_the_plain_ones_with_the_teachers_scores_of_each(mirror):
    """stored_views: the first half is the table teacher_table (and mirrored) makes, over the plain views'
    pictures; the second the same views warped, scored as stored (and flipped, with mirror); one seed, one table."""
    from fashion_mlp.models.views import apply_view, mirrored, stored_views, teacher_table, views

    images = (np.random.default_rng(0).integers(0, 256, (5, 28, 28)) / np.float32(255)).astype(np.float32)
    weights = np.random.default_rng(1).normal(size=(28 * 28, 10)).astype(np.float32)

    def logits(batch):
        return batch.reshape(len(batch), -1) @ weights

    all_views = views(1, flip=True)
    warping = {"pixels": 1.0, "smoothness": 4}
    pictures, table = stored_views(logits, images, all_views, warping, mirror, seed=7, batch=2)
    count = len(all_views)
    assert pictures.shape == (2 * count, 5, 28, 28) and pictures.dtype == np.uint8 and table.shape == (2 * count, 5, 10)
    plain = teacher_table(logits, images, all_views)
    np.testing.assert_allclose(table[:count], mirrored(plain, all_views) if mirror else plain, rtol=1e-5, atol=1e-4)
    for i, view in enumerate(all_views):
        np.testing.assert_array_equal(pictures[i], np.rint(apply_view(images, view) * 255))
        assert np.abs(pictures[count + i].astype(int) - pictures[i]).mean() > 1  # warped
        shown = pictures[count + i] / np.float32(255)
        expected = (logits(shown) + logits(shown[:, :, ::-1])) / 2 if mirror else logits(shown)
        np.testing.assert_allclose(table[count + i], expected, rtol=1e-5, atol=1e-4)
    again = stored_views(logits, images, all_views, warping, mirror, seed=7, batch=2)
    other = stored_views(logits, images, all_views, warping, mirror, seed=8, batch=2)
    assert np.array_equal(again[0], pictures) and np.array_equal(again[1], table)
    assert not np.array_equal(other[0][count:], pictures[count:]) and np.array_equal(other[0][:count], pictures[:count])


def test_a_table_distiller_shares_the_stored_pictures_with_tensorflow_rather_than_copying_them(keras):
    """The warped views' pictures are 1.5 GB for the training split; tf.constant held three copies at its peak."""
    from fashion_mlp.data import ALIGNMENT
    from fashion_mlp.models.distillation import TableDistiller
    from fashion_mlp.models.views import stored_views, views

    images = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    all_views = views(0, flip=True)
    warping = {"pixels": 1.0, "smoothness": 4}
    pictures, table = stored_views(lambda b: np.zeros((len(b), 10), np.float32), images, all_views, warping, False, 0)
    assert pictures.ctypes.data % ALIGNMENT == 0 and pictures.flags.c_contiguous
    inputs = keras.Input((28, 28))
    student = keras.Model(inputs, keras.layers.Dense(10, name="probabilities")(keras.layers.Flatten()(inputs)))
    trainer = TableDistiller(student, table, all_views, 2, 0.5, pictures=pictures)
    assert np.shares_memory(np.from_dlpack(trainer.pictures), pictures)
    np.testing.assert_array_equal(np.from_dlpack(trainer.pictures), pictures)


def test_with_stored_pictures_the_step_shows_the_picture_of_the_view_and_image_it_drew(keras):
    """A TableDistiller given pictures (teacher.views.warp) trains on pictures[view, row] / 255, the bytes its
    table's row was scored on, not on the image it was handed."""
    from fashion_mlp.models.distillation import TableDistiller
    from fashion_mlp.models.views import views

    seen = []

    class Spy(keras.layers.Layer):
        def call(self, x):
            if hasattr(x, "numpy"):  # eager, not while the model is built
                seen.append(x.numpy())
            return x

    inputs = keras.Input((28, 28))
    head = keras.layers.Dense(10, activation="softmax", name="probabilities")
    student = keras.Model(inputs, head(keras.layers.Flatten()(Spy()(inputs))))
    pictures = np.random.default_rng(0).integers(0, 256, (2, 6, 28, 28), dtype=np.uint8)
    trainer = TableDistiller(student, np.zeros((2, 6, 10), np.float32), views(0, flip=True), 2, 0.5, pictures=pictures)
    trainer.compile(optimizer="adam", run_eagerly=True)
    rows = np.array([4, 1, 3, 4], np.int32)
    trainer.train_step(((np.zeros((4, 28, 28), np.float32), rows), np.zeros(4, np.int32)))
    shown = np.rint(seen[-1] * 255)
    for i, row in enumerate(rows):
        assert any(np.array_equal(shown[i], pictures[view, row]) for view in (0, 1))


@pytest.mark.slow
@pytest.mark.parametrize("warping", [None, {"pixels": 1.0, "smoothness": 4}])
def test_a_student_learns_from_its_teachers_table_the_same_way_each_time(keras, models, tmp_path, warping):
    """teacher.views: the teacher is scored before training and never changes; the student is the same bytes
    twice, its history reads like any other, and the table, not the labels alone, moves its weights; with
    warp too, whose pictures the step looks up."""
    from test_train import synthetic_data

    from fashion_mlp.models.training import fit, make_history_callback

    data = synthetic_data(64, 32)
    views = {"shift": 1, "flip": True, "mirror": True, **({"warp": warping} if warping else {})}
    block = dict(STUDENT, augment={"shift": 0, "flip": False}, teacher=dict(STUDENT["teacher"], views=views))

    def train(path, teacher_seed=0):
        keras.backend.clear_session()
        keras.utils.set_random_seed(teacher_seed)
        teacher = models.build_model(TINY_CNN, name="cnn")
        before = [w.copy() for w in teacher.get_weights()]
        keras.utils.set_random_seed(0)
        student = models.build_model(block, name="student")
        history = make_history_callback()
        fit(student, data, block, [history], seed=0, teacher=teacher)
        models.save_model(student, path)
        for old, new in zip(before, teacher.get_weights(), strict=True):
            np.testing.assert_array_equal(old, new)
        return student, history

    student, history = train(tmp_path / "a.keras")
    train(tmp_path / "b.keras")
    other, _ = train(tmp_path / "c.keras", teacher_seed=1)
    assert sha256_file(tmp_path / "a.keras") == sha256_file(tmp_path / "b.keras")
    assert any(not np.array_equal(a, b) for a, b in zip(student.get_weights(), other.get_weights(), strict=True))
    assert len(history.rows) == 2 and all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in history.rows)
    predicted = student.predict(data["x_val"], verbose=0).argmax(axis=1)
    assert float(np.mean(predicted == data["y_val"])) == pytest.approx(history.rows[-1]["val_accuracy"])


def test_params_refuse_views_beside_other_augmentation_or_blends_and_a_mirror_without_flips():
    from conftest import REPO
    from fashion_mlp.config import ParamsError, load_params, validate

    params = load_params(REPO / "params.yaml")
    block = dict(params["train"]["regularized"])
    views = {"shift": 1, "flip": True, "mirror": True}
    teacher = {"model": "cnn", "temperature": 4, "alpha": 0.9, "views": views}
    validate({**params, "distill": {"s": dict(block, teacher=teacher)}})
    cases = [
        (dict(block, augment={"shift": 1, "flip": False}, teacher=teacher),
         r"distill\.s\.augment: with teacher\.views the views are the augmentation"),
        (dict(block, teacher=dict(teacher, mixup=0.5)), r"distill\.s\.teacher\.mixup: blends need the teacher"),
        (dict(block, teacher=dict(teacher, views=dict(views, flip=False))),
         r"distill\.s\.teacher\.views\.mirror: needs teacher\.views\.flip"),
        (dict(block, teacher=dict(teacher, views={"shift": 9, "flip": True})), r"distill\.s\.teacher\.views\.shift"),
    ]  # fmt: skip
    for student, message in cases:
        with pytest.raises(ParamsError, match=message):
            validate({**params, "distill": {"s": student}})
