"""Command `demos`: the tutorial's two warm-up lessons, XOR and the activation functions, reproduced.

The lessons live in fashion_mlp.lessons.xor and fashion_mlp.lessons.activations; this module
reads the demos section of params.yaml and writes their outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.io import write_json, write_text
from fashion_mlp.lessons import xor
from fashion_mlp.lessons.activations import (
    activation_markdown,
    activation_table,
    display_number,
    plot_activations,
    write_activation_csv,
)
from fashion_mlp.stages.common import add_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp demos", description=__doc__.splitlines()[0])
    add_section_flags(parser, "demos")
    # pipeline-wide
    add_flags(parser, "seed", "threads")
    # outputs
    parser.add_argument("--xor_json", type=Path, required=True, help="XOR results")
    parser.add_argument("--xor_points_png", type=Path, required=True, help="the four points by class")
    parser.add_argument("--xor_boundaries_png", type=Path, required=True, help="perceptron vs MLP boundaries")
    parser.add_argument("--activations_csv", type=Path, required=True, help="activation table, full precision")
    parser.add_argument("--activations_md", type=Path, required=True, help="activation table, Markdown snippet")
    parser.add_argument("--activations_png", type=Path, required=True, help="the four activation functions")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    validate_section("demos", section_from_args(args, "demos"))

    # Activation functions: numpy and matplotlib only.
    table = activation_table(args.activation_points)
    write_activation_csv(args.activations_csv, table)
    write_text(args.activations_md, activation_markdown(table))
    plot_activations(args.activation_points, args.activations_png)
    print(
        "demos: activations at z = "
        + ", ".join(display_number(r["z"], 6) for r in table)
        + ": sigmoid "
        + ", ".join(display_number(r["sigmoid"]) for r in table)
    )

    # XOR: the exact limit of one linear unit, a trained perceptron, then the MLP.
    x, y = xor.xor_data()
    proof = xor.linear_separability_proof(x, y)
    perceptron = xor.train_perceptron(x, y, args.seed)

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(args.threads, args.seed)  # before any TensorFlow op
    model, loss = xor.train_xor_mlp(x, y, args.xor_hidden, args.xor_epochs, args.xor_learning_rate)
    probabilities = xor.mlp_probabilities(model, x)
    summary = xor.xor_summary(
        x,
        y,
        proof,
        perceptron,
        probabilities,
        loss,
        args.xor_hidden,
        args.xor_epochs,
        args.xor_learning_rate,
        args.seed,
    )
    write_json(args.xor_json, summary)
    xor.plot_xor_points(x, y, args.xor_points_png)
    titles = (
        f"Trained perceptron: accuracy {summary['perceptron_accuracy']:.2f} "
        f"(best possible {summary['perceptron_best_accuracy']:.2f})",
        f"MLP, {args.xor_hidden} {xor.XOR_ACTIVATION} hidden units: accuracy {summary['mlp_accuracy']:.2f}",
    )
    best_line = next(((s["w"], s["b"]) for s in proof["subsets_of_size_n_minus_1"] if s["separable"]), None)
    xor.plot_xor_boundaries(
        x,
        y,
        lambda p: xor.perceptron_decision(perceptron["weights"], perceptron["bias"], p),
        lambda p: xor.mlp_probabilities(model, p),
        titles,
        args.xor_boundaries_png,
        best_line,
    )
    print(
        f"demos: XOR accuracy: any perceptron <= {summary['perceptron_best_accuracy']:.2f} (LP proof), "
        f"trained perceptron {summary['perceptron_accuracy']:.2f}, MLP {summary['mlp_accuracy']:.2f}"
    )
    if not summary["mlp_solved"]:
        print(
            "demos: warning: the MLP did not classify all four XOR points; raise demos.xor_epochs or demos.xor_hidden"
        )


if __name__ == "__main__":
    main()
