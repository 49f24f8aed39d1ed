"""RePRI's inference (`fewshot.repri`) against a PyTorch reference of the official code."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import repri_reference as ref
import torch

from cwt_jax.fewshot import repri
from cwt_jax.models import interpolate

TASKS, CHANNELS, FEATURES, LABELS = 3, 32, 9, 65  # 65 / 9: nearest's indices are not a stride
OFFICIAL = {  # config_files/pascal.yaml's CLASSIFIER section and test.sh
    "temperature": 20.0,
    "adapt_iter": 50,
    "weights": (1.0, "auto", "auto"),
    "cls_lr": 0.025,
    "fb_param_update": (10,),
    "fb_param_type": "soft",
}


def episodes(shot, seed):
    """Features whose foreground differs from their background, and masks with 255 bands.

    Returns:
      Support features (T, K, h, w, C), query features (T, h, w, C), support masks
      (T, K, H, W) and query masks (T, H, W), int64 in {0, 1, 255}.
    """
    rng = np.random.RandomState(seed)
    direction = rng.randn(CHANNELS).astype(np.float32)

    def images(count):
        masks = np.zeros((count, LABELS, LABELS), np.int64)
        for mask in masks:
            top, left = rng.randint(0, LABELS // 2, 2)
            height, width = rng.randint(LABELS // 4, LABELS // 2, 2)
            mask[top : top + height, left : left + width] = 1
            mask[top : top + height, left : left + 2] = 255  # an object border
        small = repri.downsample_nearest(masks, (FEATURES, FEATURES)) == 1
        noise = rng.randn(count, FEATURES, FEATURES, CHANNELS).astype(np.float32)
        features = noise + 1.5 * np.asarray(small)[..., None] * direction
        return features.astype(np.float32), masks

    support_features, support_masks = images(TASKS * shot)
    query_features, query_masks = images(TASKS)
    query_masks[:, -7:] = 255  # padding
    return (
        support_features.reshape(TASKS, shot, FEATURES, FEATURES, CHANNELS),
        query_features,
        support_masks.reshape(TASKS, shot, LABELS, LABELS),
        query_masks,
    )


def official(support_features, query_features, support_masks, query_masks):
    """The reference on all tasks at once, as `src/test.py` batches them."""
    nchw = lambda x: torch.from_numpy(x).permute(0, 1, 4, 2, 3)  # noqa: E731
    prototype, bias, probas = ref.infer(
        nchw(support_features),
        nchw(query_features[:, None]),
        torch.from_numpy(support_masks),
        torch.from_numpy(query_masks[:, None]),
        **OFFICIAL,
    )
    return prototype.numpy(), bias.numpy(), probas[:, 0, 1].numpy()


def settings(**changes):
    values = {
        "optimizer": optax.sgd(OFFICIAL["cls_lr"]),
        "temperature": OFFICIAL["temperature"],
        "adapt_iter": OFFICIAL["adapt_iter"],
        "fb_param_update": OFFICIAL["fb_param_update"],
        "weights": OFFICIAL["weights"],
        "norm_feat": True,
        "query_pixels": "labelled",
    }
    return repri.Settings(**{**values, **changes})


def jax_inference(support_features, query_features, support_masks, query_masks, repri_settings):
    """`repri.fit` vmapped over the tasks, and the query's probabilities at label size."""

    def one(support, query, masks, query_mask):
        valid = repri.query_valid(query_mask, query.shape[:2], repri_settings.query_pixels)
        params = repri.fit(support, masks, query, valid, settings=repri_settings)
        difference = repri.logit_difference(params, query, repri_settings)
        resized = interpolate.resize_bilinear(difference[..., None], query_mask.shape)[..., 0]
        return params, jax.nn.sigmoid(resized)

    params, probabilities = jax.vmap(one)(
        *(jnp.asarray(x) for x in (support_features, query_features, support_masks, query_masks))
    )
    return np.asarray(params["prototype"]), np.asarray(params["bias"]), np.asarray(probabilities)


@pytest.mark.parametrize("shot", [1, 5])
def test_fitted_prototype_bias_and_query_probabilities_match_the_official_code(
    shot, record_property
):
    inputs = episodes(shot, seed=shot)
    expected = official(*inputs)
    actual = jax_inference(*inputs, settings())
    unfitted = jax_inference(*inputs, settings(adapt_iter=1))  # no update: the initial one
    moved = np.abs(expected[0] - unfitted[0]).max()
    assert moved > 1e-3 * np.abs(expected[0]).max()  # the loop really moved the prototype
    for name, a, e in zip(("prototype", "bias", "probabilities"), actual, expected, strict=True):
        absolute = float(np.abs(a - e).max())
        relative = absolute / float(np.abs(e).max())
        record_property(f"{name}_max_abs", absolute)
        record_property(f"{name}_max_rel", relative)
        assert relative < 1e-5, (name, absolute, relative)


def test_nearest_downsampling_is_pytorchs():
    masks = np.random.RandomState(0).randint(0, 3, (2, 473, 417))
    for size in ((60, 53), (9, 9), (473, 834), (236, 417)):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(masks[:, None]).float(), size=size, mode="nearest"
        )[:, 0].long()
        np.testing.assert_array_equal(repri.downsample_nearest(masks, size), expected.numpy())
