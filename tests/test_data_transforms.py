import numpy as np
import pytest

from cwt_jax.data import IMAGENET_MEAN, IMAGENET_STD, Augmentation, transforms


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        (375, 500, 473, (352, 472)),  # 473 -> 472; int(375 * 473 / 500) = 354 -> 352
        (500, 333, 473, (472, 312)),  # int(333 * 473 / 500) = 315 -> 312
        (100, 100, 473, (472, 472)),  # upscaling; a square stays square
        (60, 64, 64, (56, 64)),
        (473, 473, 473, (472, 472)),
    ],
)
def test_resize_and_pad_geometry(height, width, size, expected):
    image = np.full((height, width, 3), 100, np.float32)
    mask = np.full((height, width), 3, np.uint8)
    assert transforms.resized_shape(height, width, size) == expected
    out_image, out_mask = transforms.eval_transform(image, mask, size)
    new_h, new_w = expected
    assert out_image.shape == (size, size, 3) and out_image.dtype == np.float32
    assert out_mask.shape == (size, size) and out_mask.dtype == np.int32
    assert (out_mask[:new_h, :new_w] == 3).all()
    assert (out_mask[new_h:] == 255).all() and (out_mask[:, new_w:] == 255).all()
    expected_value = np.broadcast_to((100 - IMAGENET_MEAN) / IMAGENET_STD, (new_h, new_w, 3))
    np.testing.assert_allclose(out_image[:new_h, :new_w], expected_value, rtol=1e-5)
    # The image is padded with 0 before normalisation, as RePRI does.
    padding = -IMAGENET_MEAN / IMAGENET_STD
    np.testing.assert_allclose(out_image[new_h:], np.broadcast_to(padding, out_image[new_h:].shape))
    np.testing.assert_allclose(
        out_image[:, new_w:], np.broadcast_to(padding, out_image[:, new_w:].shape)
    )


def test_resize_is_bilinear_for_images_and_nearest_for_masks():
    # A 1x2 input becomes 8x16; cv2's INTER_LINEAR samples at half-pixel centres, edges clamped.
    image = np.array([[[0, 0, 0], [8, 16, 80]]], np.float32)
    mask = np.array([[1, 2]], np.uint8)
    out_image, out_mask = transforms.resize_and_pad(image, mask, 16)
    weight = np.clip((np.arange(16) + 0.5) / 8 - 0.5, 0, 1)
    np.testing.assert_allclose(out_image[:8, :, 1], np.tile(16 * weight, (8, 1)), atol=1e-4)
    assert (out_mask[:8, :8] == 1).all() and (out_mask[:8, 8:] == 2).all()
    assert (out_mask[8:] == 255).all() and (out_image[8:] == 0).all()


def test_normalize_uses_imagenet_statistics_on_0_255():
    pixel = np.array([[[124.0, 116.0, 104.0]]], np.float32)
    expected = (pixel - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(transforms.normalize(pixel), expected, rtol=1e-5)


def test_flips_follow_the_rng():
    image = np.arange(16 * 24 * 3, dtype=np.float32).reshape(16, 24, 3)
    mask = (np.arange(16 * 24) % 251).astype(np.uint8).reshape(16, 24)
    outcomes = set()
    for seed in range(12):
        out_image, out_mask = transforms.train_transform(
            image, mask, 16, Augmentation(hflip=True, vflip=True), np.random.default_rng(seed)
        )
        candidates = {
            (h, v): transforms.eval_transform(
                np.ascontiguousarray(image[:: -1 if v else 1, :: -1 if h else 1]),
                np.ascontiguousarray(mask[:: -1 if v else 1, :: -1 if h else 1]),
                16,
            )
            for h in (False, True)
            for v in (False, True)
        }
        matches = [
            flips
            for flips, (i, m) in candidates.items()
            if np.array_equal(m, out_mask) and np.allclose(i, out_image)
        ]
        assert len(matches) == 1
        outcomes.add(matches[0])
        again = transforms.train_transform(
            image, mask, 16, Augmentation(hflip=True, vflip=True), np.random.default_rng(seed)
        )
        assert np.array_equal(again[1], out_mask)
    assert len(outcomes) == 4  # every flip combination occurs


def test_scale_rotate_crop_keep_shapes_and_labels():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (40, 50, 3)).astype(np.float32)
    mask = rng.choice(np.array([0, 3, 7, 255], np.uint8), (40, 50))
    augmentation = Augmentation(scale_range=(0.5, 2.0), rotation_range=(-10, 10), crop=True)
    for seed in range(5):
        out_image, out_mask = transforms.train_transform(
            image, mask, 32, augmentation, np.random.default_rng(seed)
        )
        assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32)
        assert set(np.unique(out_mask)) <= {0, 3, 7, 255}
