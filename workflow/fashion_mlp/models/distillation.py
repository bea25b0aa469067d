"""Knowledge distillation: a student fitted to a frozen teacher's softened outputs as well as to the labels.

The loss of Hinton, Vinyals and Dean (2015): alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) +
(1 - alpha) * cross-entropy(labels, softmax(s)), with t and s the teacher's and the student's logits.
The teacher sees exactly the augmented batch the student sees ("consistent teaching": Beyer et al.
2022), so augmentation has to happen inside the training step; Keras has no distiller of its own
(keras.io shows one as an example), hence this class. The student alone is saved: the teacher and the
augmentation never reach its file.

With `mixup` (the Beta distribution's concentration m > 0), each augmented batch is also mixed with a
shuffled copy of itself, x' = lam * x + (1 - lam) * x[perm] with lam ~ Beta(m, m) per image, and the
teacher scores the mixed images: "function matching" (Beyer et al. 2022), which shows the student the
teacher's function between the training images too. The label term weighs both labels by lam, as in
mixup (Zhang et al. 2018).

`TableDistiller` (`teacher.views`) replaces the teacher in the step by a table of its logits over
fixed views of the training images, scored once before training (models/views.py); with `warp`, its
views include warped pictures, which it keeps and looks up as it does the logits.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from fashion_mlp.data import NUM_CLASSES
from fashion_mlp.models.fitting import as_tensor
from fashion_mlp.models.views import apply_views, mirrored, stored_views, teacher_table, views

OUTPUT_LAYER = "probabilities"  # every kind ends in Dense(10, softmax) under this name (architectures.py)


class Logits:
    """A model's logits: its layers up to the softmax head, then the head's kernel and bias without the softmax.

    The temperature needs logits, and log(softmax) underflows. The weights are the model's own, so
    training through this trains the model.
    """

    def __init__(self, model: keras.Model):
        self.head = model.get_layer(OUTPUT_LAYER)
        self.features = keras.Model(model.inputs[0], self.head.input, name=f"{model.name}_features")

    def __call__(self, x, training: bool):
        return ops.matmul(self.features(x, training=training), self.head.kernel) + self.head.bias


def distillation_loss(
    labels, student_logits, teacher_logits, temperature: float, alpha: float, smoothing: float = 0.0, mixed=None
):
    """Mean over the batch of alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels, student).

    T^2 keeps the soft term's gradients on the scale of the hard one's as T changes (Hinton et al.).
    `smoothing` is the hard term's label smoothing, as in a train block. `mixed`, for mixed images, is
    (lam, other labels): the hard term is then lam * CE(labels) + (1 - lam) * CE(other labels).
    """
    soft_teacher = ops.softmax(teacher_logits / temperature, axis=-1)
    log_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_student = ops.log_softmax(student_logits / temperature, axis=-1)
    soft = ops.sum(soft_teacher * (log_teacher - log_student), axis=-1) * temperature**2
    hard = _cross_entropy(labels, student_logits, smoothing)
    if mixed is not None:
        lam, others = mixed
        hard = lam * hard + (1.0 - lam) * _cross_entropy(others, student_logits, smoothing)
    return ops.mean(alpha * soft + (1.0 - alpha) * hard)


def _cross_entropy(labels, logits, smoothing: float):
    targets = ops.one_hot(ops.cast(labels, "int32"), NUM_CLASSES)
    return keras.losses.categorical_crossentropy(targets, logits, from_logits=True, label_smoothing=smoothing)


def mix(x, labels, concentration: float, seed):
    """Each image blended with another of the batch: (mixed images, their weights lam, the other labels).

    lam ~ Beta(m, m) per image, the partner drawn by a shuffle of the batch; `seed` a SeedGenerator."""
    size = ops.shape(x)[0]
    lam = keras.random.beta((size,), concentration, concentration, seed=seed)
    partner = keras.random.shuffle(ops.arange(size), seed=seed)
    weight = ops.reshape(lam, (-1,) + (1,) * (len(x.shape) - 1))
    mixed = weight * x + (1.0 - weight) * ops.take(x, partner, axis=0)
    return mixed, lam, ops.take(labels, partner, axis=0)


class Distiller(keras.Model):
    """Trains `student` on `teacher`'s outputs; validates the student alone, on the labels.

    `loss` and `accuracy` (and their `val_` forms) mean what they mean for a plainly trained model:
    the training loss is the distillation loss, the validation loss the student's cross-entropy
    (with the block's label smoothing), so early stopping and the history read the same columns.
    """

    def __init__(
        self,
        student,
        teacher,
        temperature: float,
        alpha: float,
        augment=None,
        smoothing: float = 0.0,
        mixup: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(name=f"{student.name}_distilling")
        self.mixup = float(mixup)
        self.mixing = keras.random.SeedGenerator(seed) if self.mixup else None
        if teacher is not None:  # None: a TableDistiller's table stands in for it
            teacher.trainable = False
        self.student, self.teacher, self.augment = student, teacher, augment
        self.temperature, self.alpha, self.smoothing = float(temperature), float(alpha), float(smoothing)
        self.student_logits = Logits(student)
        self.teacher_logits = Logits(teacher) if teacher is not None else None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y = data
        if self.augment is not None:
            x = self.augment(x, training=True)
        mixed, shown = None, y
        if self.mixup:
            x, lam, others = mix(x, y, self.mixup, self.mixing)
            mixed, shown = (lam, others), ops.where(lam >= 0.5, y, others)  # accuracy: the larger part's label
        teacher = self.teacher_logits(x, training=False)
        with tf.GradientTape() as tape:
            logits = self.student_logits(x, training=True)
            loss = distillation_loss(y, logits, teacher, self.temperature, self.alpha, self.smoothing, mixed)
            if self.student.losses:  # the student's L2 penalties
                loss = loss + ops.sum(self.student.losses)
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._update(loss, shown, logits)

    def test_step(self, data):
        x, y = data
        logits = self.student_logits(x, training=False)
        targets = ops.one_hot(ops.cast(y, "int32"), NUM_CLASSES)
        loss = ops.mean(
            keras.losses.categorical_crossentropy(targets, logits, from_logits=True, label_smoothing=self.smoothing)
        )
        if self.student.losses:
            loss = loss + ops.sum(self.student.losses)
        return self._update(loss, y, logits)

    def _update(self, loss, labels, logits):
        self.loss_tracker.update_state(loss)
        self.accuracy.update_state(labels, logits)  # argmax of the logits is argmax of the probabilities
        return {m.name: m.result() for m in self.metrics}


class TableDistiller(Distiller):
    """A Distiller whose teacher scored every training image in fixed views before training (`teacher.views`).

    It trains on ((images, their row numbers), labels): each step draws a view per image (seeded), shows
    the student the image in that view, and takes the teacher's logits from `table` (views, images,
    classes), so no teacher runs in the step (models/views.py). Validation is the Distiller's. With
    `pictures` (views, images, height, width) uint8, a view's picture is looked up there, not made.
    """

    def __init__(
        self, student, table, all_views, temperature: float, alpha: float, smoothing=0.0, seed=0, pictures=None
    ):
        super().__init__(student, None, temperature, alpha, smoothing=smoothing, seed=seed)
        self.table, self.all_views = tf.constant(table), list(all_views)
        # Shared, not copied (views.stored_views makes them in aligned memory): 1.5 GB for the warped views.
        self.pictures = None if pictures is None else tf.convert_to_tensor(as_tensor(pictures))
        self.viewing = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        images = inputs[0] if isinstance(inputs, (tuple, list)) else inputs  # training's (images, rows)
        return self.student(images, training=training)

    def train_step(self, data):
        (images, rows), y = data
        chosen = keras.random.randint(ops.shape(rows), 0, self.table.shape[0], seed=self.viewing)
        where = ops.stack([chosen, ops.cast(rows, "int32")], axis=1)
        if self.pictures is None:
            x = apply_views(images, chosen, self.all_views)
        else:  # the bytes the pictures came from, scaled as images.scale does
            x = ops.cast(tf.gather_nd(self.pictures, where), "float32") / 255.0
        teacher = tf.gather_nd(self.table, where)
        with tf.GradientTape() as tape:
            logits = self.student_logits(x, training=True)
            loss = distillation_loss(y, logits, teacher, self.temperature, self.alpha, self.smoothing)
            if self.student.losses:
                loss = loss + ops.sum(self.student.losses)
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._update(loss, y, logits)


def table_distiller(student, teacher, images, how: dict, smoothing: float, seed: int) -> TableDistiller:
    """A TableDistiller for `student`, with `teacher`'s table over `images` in the views `how["views"]` asks for."""
    asked = how["views"]
    all_views = views(asked["shift"], asked["flip"])
    logits = Logits(teacher)
    score = tf.function(lambda batch: logits(batch, training=False))
    scores = lambda batch: score(tf.constant(batch)).numpy()  # noqa: E731
    pictures = None
    if asked.get("warp"):
        pictures, table = stored_views(scores, images, all_views, asked["warp"], asked.get("mirror", False), seed)
    else:
        table = teacher_table(scores, images, all_views)
        if asked.get("mirror", False):
            table = mirrored(table, all_views)
    return TableDistiller(student, table, all_views, how["temperature"], how["alpha"], smoothing, seed, pictures)
