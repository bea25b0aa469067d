"""The model-randomization check (Adebayo et al., NeurIPS 2018), judged against what unrelated maps score.

Half of a Fashion-MNIST picture is exact zeros, and a map that multiplies its input is zero there
too, so two such maps share those ranks whatever the model: x·g₁ and x·g₂ with g₁, g₂ independent
noise already reach ρ ≈ 0.87 on |maps| over all pixels. A trained and a randomized model's maps are
therefore compared with that level, not with a fixed threshold: the reference of a method is noise of
its own form (LRP-ε on a ReLU net is input × gradient: x·g; DeepSHAP scales the gradient by the input's
distance from the background mean: (x − x̄)·g). Beside it, how much the trained maps look like |x|
itself and like an edge detector (Sobel on x), as Adebayo et al. compare.

Every figure is a Spearman ρ averaged over images: signed and of |maps|, over all pixels and over
the garment's (x > 0), each with a percentile bootstrap 95 % interval over images (scipy.stats.bootstrap).
The per-image ranks under a mask are written here: quantus' MPRT averages one similarity per call, with
no interval.
"""

from __future__ import annotations

import warnings

import numpy as np

VARIANTS = {  # key: (of absolute values, on the garment only)
    "spearman": (False, False),
    "spearman_abs": (True, False),
    "spearman_on_garment": (False, True),
    "spearman_abs_on_garment": (True, True),
}
JUDGED_ON = "spearman_abs_on_garment"  # what a reader takes for "important pixels", where zeros cannot tie
RESAMPLES = 1000


def per_image_rho(a: np.ndarray, b: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Spearman's ρ of each image's two flat maps (over its mask's pixels); nan where a map is constant.

    scipy's `spearmanr`, with the ranking done for all images at once: called per image, it ranked each
    map through `apply_along_axis`, and that was half of an MLP's `explain` checks. The pixels outside a
    mask are set to +inf, so they rank last and leave the others' ranks as among themselves; the ranks'
    correlation is spearmanr's own `np.corrcoef`, so each ρ is the float spearmanr gives.
    """
    from scipy.stats import rankdata, spearmanr

    a, b = np.asarray(a), np.asarray(b)
    masks = np.ones(a.shape, dtype=bool) if masks is None else np.asarray(masks, dtype=bool)
    ranks_a = rankdata(np.where(masks, a, np.inf), axis=1)
    ranks_b = rankdata(np.where(masks, b, np.inf), axis=1)
    rhos = np.full(len(a), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant map has no ranks: nan, left out of the mean
        for i, mask in enumerate(masks):
            u, v = a[i][mask], b[i][mask]
            if len(u) <= 2 or (u[0] == u).all() or (v[0] == v).all():
                continue
            if not (np.isfinite(u).all() and np.isfinite(v).all()):  # spearmanr's own rules for nan and inf
                rhos[i] = spearmanr(u, v).statistic
                continue
            ranked = np.vstack((ranks_a[i][mask], ranks_b[i][mask]))
            rhos[i] = np.corrcoef(ranked)[1, 0]
    return rhos


def mean_interval(rhos: np.ndarray, seed: int) -> dict:
    """The mean over images and its percentile bootstrap 95 % interval (scipy, images resampled with `seed`)."""
    from scipy.stats import bootstrap

    finite = rhos[np.isfinite(rhos)]
    if len(finite) < 2:  # no interval from fewer than two images
        mean = float(finite.mean()) if len(finite) else float("nan")
        return {"mean": mean, "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    ci = bootstrap((finite,), np.mean, n_resamples=RESAMPLES, method="percentile", rng=rng).confidence_interval
    return {"mean": float(finite.mean()), "low": float(ci.low), "high": float(ci.high)}


def similarity(a: np.ndarray, b: np.ndarray, images: np.ndarray, seed: int, variants=tuple(VARIANTS)) -> dict:
    """The `variants` of ρ (all by default) between two sets of maps of `images`: {variant: {"mean", "low", "high"}}."""
    n = len(images)
    a, b = a.reshape(n, -1), b.reshape(n, -1)
    garment = images.reshape(n, -1) > 0
    out = {}
    for key in variants:
        absolute, on_garment = VARIANTS[key]
        x, y = (np.abs(a), np.abs(b)) if absolute else (a, b)
        out[key] = mean_interval(per_image_rho(x, y, garment if on_garment else None), seed)
    return out


def edges(images: np.ndarray) -> np.ndarray:
    """The Sobel gradient magnitude of each picture: an edge detector that knows no model."""
    from scipy.ndimage import sobel

    x = images.reshape(len(images), 28, 28).astype(np.float64)
    return np.hypot(sobel(x, axis=1), sobel(x, axis=2))


def noise_maps(
    images: np.ndarray, centre: np.ndarray | None, seed: int, by_input: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Two maps of each image that share only its input: (x − centre)·g₁ and (x − centre)·g₂, g Gaussian
    (g₁ and g₂ alone when not `by_input`: the form of a plain gradient)."""
    rng = np.random.default_rng(seed)
    x = images.reshape(len(images), -1).astype(np.float64)
    scaled = x - (0.0 if centre is None else centre.reshape(1, -1)) if by_input else np.ones_like(x)
    return scaled * rng.standard_normal(x.shape), scaled * rng.standard_normal(x.shape)


def check(
    trained: np.ndarray,
    randomized: np.ndarray,
    images: np.ndarray,
    centre: np.ndarray | None,
    seed: int,
    by_input: bool = True,
    margin: float = 0.0,
):
    """The check for one method: its maps of `images` on the trained and the randomized model, against
    noise maps of its form (`centre`: None for x·g, the background mean for (x − x̄)·g; plain g when
    not `by_input`). It FAILS when its interval lies above the noise maps' by more than `margin`: an
    equivalence margin, so that an excess a hundred images can resolve but no reader could see (ρ 0.02
    against 0.00) does not count."""
    ours = similarity(trained, randomized, images, seed)
    noise = similarity(*noise_maps(images, centre, seed, by_input), images, seed)
    like_input = similarity(trained, np.abs(images), images, seed)
    like_edges = similarity(trained, edges(images), images, seed)
    failed = ours[JUDGED_ON]["low"] > noise[JUDGED_ON]["high"] + margin
    return {
        **{key: ours[key]["mean"] for key in VARIANTS},
        "interval": {key: [ours[key]["low"], ours[key]["high"]] for key in VARIANTS},
        "reference": ("(x − background mean)·noise" if centre is not None else "x·noise") if by_input else "noise",
        "noise_reference": {key: noise[key]["mean"] for key in VARIANTS},
        "noise_reference_interval": {key: [noise[key]["low"], noise[key]["high"]] for key in VARIANTS},
        "like_input": {key: like_input[key]["mean"] for key in VARIANTS},
        "like_edges": {key: like_edges[key]["mean"] for key in VARIANTS},
        "judged_on": JUDGED_ON,
        "excess": ours[JUDGED_ON]["mean"] - noise[JUDGED_ON]["mean"],
        "margin": margin,
        "verdict": "FAILS" if failed else "passes",
        "meaning": "the maps stay more alike on a randomized model than unrelated maps of the same input do"
        if failed
        else "the maps change on a randomized model as much as unrelated maps of the same input differ",
    }
