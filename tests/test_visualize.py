"""Episode panels: every support, the ground truth and both predictions, titled."""

import numpy as np

from cwt_jax.evaluation import visualize


def test_panel_shows_every_support_and_both_predictions_with_titles():
    rng = np.random.default_rng(0)
    size, shot = 64, 3
    mask = np.zeros((size, size), np.uint8)
    mask[16:48, 16:48] = 1
    mask[-4:] = 255
    episode = {
        "support_images": rng.standard_normal((shot, size, size, 3)).astype(np.float32),
        "support_masks": np.stack([mask] * shot),
        "query_image": rng.standard_normal((size, size, 3)).astype(np.float32),
        "query_mask": mask,
    }
    predictions = {"cwt": (mask == 1).astype(np.int32), "support_only": np.zeros_like(mask)}
    image = visualize.panel(episode, predictions, {"cwt": 1.0, "support_only": 0.0}, "circle")
    title = image.shape[0] - visualize.TILE
    assert image.shape == (title + visualize.TILE, (shot + 3) * visualize.TILE, 3)
    titles = image[:title]
    # Dark antialiased text on white (OpenCV 4.x and 5.x draw the antialiased edges apart).
    assert (titles.max(axis=-1) < 64).any() and (titles == 255).any()
    # The outline is drawn white on black: both show around a foreground of any colour.
    truth = image[title:, shot * visualize.TILE : (shot + 1) * visualize.TILE]
    assert (truth == 255).all(axis=-1).any() and (truth == 0).all(axis=-1).any()
    # The support-only prediction is empty: no outline on its tile.
    empty = image[title:, (shot + 2) * visualize.TILE :]
    assert not (empty == 255).all(axis=-1).any()
