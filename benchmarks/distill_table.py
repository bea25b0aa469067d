"""Issue 32's probe: distillation from a table of a teacher's logits over fixed views, on validation only.

The teacher (a saved Keras model, e.g. cnn-long's recipe) scores every training image in each view:
flipped or not, shifted by up to `--shift` pixels each way (zeros fill in). Each epoch the student
(an MLP of `build_mlp`) sees one random view of each image and learns that view's row of the table
with `distillation_loss` (T, alpha), so its training step has no teacher pass. The table is cached
beside the output. Only the validation split is scored; the test split is never read.

    python benchmarks/distill_table.py --teacher teacher.keras --hidden 1024 1024 --epochs 300

Not the project's `train` yet: docs/models.md#the-recipe-search-for-mlp-distilled-issue-32-on-validation
records what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def views(shift: int, flip: bool) -> list[tuple[bool, int, int]]:
    """Every (flipped, dy, dx) of the table, the unchanged image among them."""
    span = range(-shift, shift + 1)
    return [(f, dy, dx) for f in ((False, True) if flip else (False,)) for dy in span for dx in span]


def apply_view(images: np.ndarray, view: tuple[bool, int, int]) -> np.ndarray:
    """`images` (n, 28, 28) flipped left-right if asked, then moved by (dy, dx) pixels with zeros filling in."""
    flipped, dy, dx = view
    source = images[:, :, ::-1] if flipped else images
    out = np.zeros_like(source)
    height, width = source.shape[1:]
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = source[
        :, max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def teacher_table(teacher_path: Path, x: np.ndarray, all_views: list, batch: int = 2000) -> np.ndarray:
    """The teacher's logits of every image in every view: (views, images, 10)."""
    import keras
    import tensorflow as tf

    from fashion_mlp.models.distillation import Logits

    logits = Logits(keras.models.load_model(teacher_path))
    score = tf.function(lambda images: logits(images, training=False))
    table = np.zeros((len(all_views), len(x), 10), np.float32)
    for i, view in enumerate(all_views):
        shown = apply_view(x, view)
        for start in range(0, len(x), batch):
            table[i, start : start + batch] = score(tf.constant(shown[start : start + batch])).numpy()
    return table


def student_class(temperature: float, alpha: float):
    import keras
    import tensorflow as tf

    from fashion_mlp.models.distillation import Logits, distillation_loss

    class TableStudent(keras.Model):
        """Trains `net` on ((images, the teacher's logits of them), labels)."""

        def __init__(self, net):
            super().__init__()
            self.net, self.logits = net, Logits(net)
            self.tracker = keras.metrics.Mean(name="loss")
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

        @property
        def metrics(self):
            return [self.tracker, self.accuracy]

        def call(self, x, training=False):
            return self.net(x, training=training)

        def train_step(self, data):
            (images, teacher), labels = data
            with tf.GradientTape() as tape:
                logits = self.logits(images, training=True)
                loss = distillation_loss(labels, logits, teacher, temperature, alpha)
            variables = self.net.trainable_variables
            self.optimizer.apply(tape.gradient(loss, variables), variables)
            self.tracker.update_state(loss)
            self.accuracy.update_state(labels, logits)
            return {m.name: m.result() for m in self.metrics}

    return TableStudent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's .keras file")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/train.npz"))
    parser.add_argument("--out_dir", type=Path, default=Path("probes"))
    parser.add_argument("--name", default="student")
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024])
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--shift", type=int, default=1)
    parser.add_argument("--no_flip", action="store_true")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=10, help="score validation every this many epochs")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(args.threads, args.seed)
    import keras

    from fashion_mlp.models.architectures import build_mlp

    started = time.time()
    data = np.load(args.data)
    x, y = data["x_train"], data["y_train"].astype("int32")
    x_val, y_val = data["x_val"], data["y_val"].astype("int32")
    all_views = views(args.shift, not args.no_flip)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cached = args.out_dir / f"table-{args.teacher.stem}-shift{args.shift}-flip{int(not args.no_flip)}.npy"
    if cached.exists():
        table = np.load(cached)
    else:
        table = teacher_table(args.teacher, x, all_views)
        np.save(cached, table)
    print(f"table {table.shape}, {time.time() - started:.0f} s", flush=True)

    net = build_mlp(args.hidden, "relu", args.dropout, 0.0, True, name=args.name)
    model = student_class(args.temperature, args.alpha)(net)
    steps = args.epochs * int(np.ceil(len(x) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), steps_per_execution=16)
    rng = np.random.default_rng(args.seed)
    history, trained = [], time.time()
    for epoch in range(args.epochs):
        chosen = rng.integers(len(all_views), size=len(x))
        shown = np.empty_like(x)
        for i, view in enumerate(all_views):
            shown[chosen == i] = apply_view(x[chosen == i], view)
        fit = model.fit(
            (shown, table[chosen, np.arange(len(x))]), y, batch_size=args.batch_size,
            epochs=epoch + 1, initial_epoch=epoch, verbose=0, shuffle=True,
        )  # fmt: skip
        if (epoch + 1) % args.every == 0 or epoch + 1 == args.epochs:
            val = float((net.predict(x_val, batch_size=2000, verbose=0).argmax(1) == y_val).mean())
            history.append({"epoch": epoch + 1, "accuracy": fit.history["accuracy"][-1], "val_accuracy": val})
            print(f"epoch {epoch + 1}: training {history[-1]['accuracy']:.4f}, validation {val:.4f}", flush=True)
    net.save(args.out_dir / f"{args.name}.keras")
    summary = {
        "name": args.name,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "validation": history[-1]["val_accuracy"],
        "best_validation": max(h["val_accuracy"] for h in history),
        "seconds": round(time.time() - started),
        "seconds_per_epoch": round((time.time() - trained) / args.epochs, 2),
        "history": history,
    }
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
