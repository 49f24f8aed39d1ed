"""The embedded synthetic few-shot segmentation benchmark.

20 object classes in 4 folds of 5, mirroring PASCAL-5i. Each class has its own shape
(``classes.SYNTHETIC_CLASSES``) and its own appearance: a hue, a texture type (stripes,
checks, dots, rings or blobs), a texture period and orientation. Images are drawn on a
textured background with clutter (lines, small blobs, some saturated), hold 1-3 objects of
different classes that may occlude each other, and carry a 255 band on object borders as in
VOC. An image is a pure function of (seed, split, index, image_size), drawn with NumPy
alone (polygons, ellipses, lines, colours, borders and the smooth noise's cubic
upsampling), so no image library's version moves a pixel: OpenCV's line and ellipse
drawing and its resize round-off differ between releases. `tests/test_data_builders.py`
pins a fingerprint of the first images.

Instances of a class differ as real objects do, in colour, texture, scale and pose: the
hue moves up to ``_HUE_SPREAD`` around the class's, half the instances swap their two
colours (a dark object with a bright pattern, or the reverse), the texture's period and
orientation vary, and so do the object's size and rotation. A support and a query of one
class therefore rarely look alike: a classifier fitted to the support alone misses part
of the query, which is what the CWT's adaptation to each query is for. Without this
variation every instance of a class looks the same and there is nothing to adapt.
"""

import colorsys

import numpy as np

from cwt_jax.data.classes import SYNTHETIC_CLASSES
from cwt_jax.data.labels import IGNORE_LABEL

NUM_CLASSES = len(SYNTHETIC_CLASSES)
# Names the generator's output in a prepared dataset's config: v2 draws with NumPy (v1
# drew with OpenCV, whose pixels moved with its version).
GENERATOR_VERSION = "v2"
_SPLIT_CODES = {"train": 0, "val": 1}
_OBJECT_COUNT_PROBS = (0.4, 0.4, 0.2)  # 1, 2 or 3 objects
_SIZE_RANGE = (0.5, 0.85)  # object box side / image side; large enough for the 2*32*32 rule
_ROTATION = 45  # degrees either way
_HUE_SPREAD = 0.1  # of the hue circle, either way of the class's hue
_SWAPPED_COLOURS = 0.5  # the share of instances whose two colours swap
_PERIOD_RANGE = (0.7, 1.4)  # times the class's texture period
_ORIENTATION_SPREAD = 30  # degrees either way of the class's texture orientation
_MIN_VISIBLE = 0.5  # occlusion may hide at most half of an object


def generate_example(seed: int, split: str, index: int, image_size: int):
    """Draws one synthetic image and its mask.

    Args:
      seed: Dataset seed.
      split: ``"train"`` or ``"val"`` (independent streams).
      index: Image index within the split.
      image_size: Side length of the square image.

    Returns:
      (image uint8 (S, S, 3) RGB, mask uint8 (S, S) with class ids 1..20, 0 background and
      255 on object borders).

    """
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    image = _background(rng, image_size)
    label = np.zeros((image_size, image_size), np.uint8)
    num_objects = rng.choice(len(_OBJECT_COUNT_PROBS), p=_OBJECT_COUNT_PROBS) + 1
    # The first object cycles through the classes, which balances them across images.
    others = rng.permutation(np.delete(np.arange(NUM_CLASSES), index % NUM_CLASSES))
    for class_index in [index % NUM_CLASSES, *others[: num_objects - 1]]:
        shape = _place_object(rng, class_index, label)
        if shape is None:
            break
        texture = _appearance(rng, class_index, image_size, _centroid(shape))
        image[shape] = texture[shape]
        label[shape] = class_index + 1
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    label[_borders(label)] = IGNORE_LABEL
    return image, label


def _borders(label):
    """Pixels whose 3x3 neighbourhood (within the image) holds more than one label."""
    size = label.shape[0]
    padded = np.pad(label, 1, mode="edge")
    windows = [padded[dy : dy + size, dx : dx + size] for dy in range(3) for dx in range(3)]
    return np.max(windows, axis=0) != np.min(windows, axis=0)


def _pixel_grid(size):
    """The (S, S) float64 x and y coordinates of the pixel centres."""
    yy, xx = np.mgrid[0:size, 0:size]
    return xx.astype(np.float64), yy.astype(np.float64)


def _inside_polygon(points, size):
    """(S, S) bool: pixel centres inside the polygon `points` (N, 2) of (x, y), even-odd."""
    xx, yy = _pixel_grid(size)
    inside = np.zeros((size, size), bool)
    for (x0, y0), (x1, y1) in zip(points, np.roll(points, -1, axis=0), strict=True):
        if y0 == y1:
            continue
        crosses = (y0 > yy) != (y1 > yy)
        inside ^= crosses & (xx < x0 + (yy - y0) * (x1 - x0) / (y1 - y0))
    return inside


def _place_object(rng, class_index, label):
    size = label.shape[0]
    for _ in range(20):
        side = rng.uniform(*_SIZE_RANGE) * size * _SIZE_BOOST[class_index]
        centre = rng.uniform(side * 0.4, size - side * 0.4, size=2)
        angle = rng.uniform(-_ROTATION, _ROTATION)
        shape = _shape_mask(class_index, size, centre, side, angle)
        if _visible_enough(label, shape):
            return shape
    return None


def _visible_enough(label, shape):
    for c in np.unique(label[shape]):
        if (
            c
            and (label == c).sum() - (shape & (label == c)).sum()
            < _MIN_VISIBLE * (label == c).sum()
        ):
            return False
    return shape.sum() > 0


def _centroid(shape):
    ys, xs = np.nonzero(shape)
    return np.array([xs.mean(), ys.mean()])


def _regular(n, radius=1.0, phase=-np.pi / 2):
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1) * radius


def _star(points, inner):
    outer = _regular(points)
    inner_points = _regular(points, inner, -np.pi / 2 + np.pi / points)
    return np.stack([outer, inner_points], 1).reshape(-1, 2)


def _heart():
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], 1) / 16


def _rect(x0, y0, x1, y1):
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)


# Each shape is a list of (polygon in [-1, 1]^2, fill value): value 0 polygons cut holes.
_SHAPES = (
    [(_regular(64), 1)],  # circle
    [(_rect(-0.85, -0.85, 0.85, 0.85), 1)],  # square
    [(np.array([(0, -1), (1, 0.8), (-1, 0.8)]), 1)],  # triangle
    [(np.array([(0, -1), (1, 0), (0, 1), (-1, 0)]), 1)],  # diamond
    [(_regular(5), 1)],  # pentagon
    [(_regular(6, phase=0), 1)],  # hexagon
    [(_star(5, 0.55), 1)],  # star
    [(_rect(-1, -0.3, 1, 0.3), 1), (_rect(-0.3, -1, 0.3, 1), 1)],  # cross
    [(_regular(64), 1), (_regular(64, 0.5), 0)],  # ring
    [(_regular(64), 1), (_regular(64, 0.75) + (0.55, 0), 0)],  # crescent
    [(_regular(64) * (1, 0.65), 1)],  # ellipse
    [(np.array([(-1, -0.4), (0, -0.4), (0, -1), (1, 0), (0, 1), (0, 0.4), (-1, 0.4)]), 1)],
    [(_rect(-1, -1, -0.2, 1), 1), (_rect(-1, 0.2, 1, 1), 1)],  # ell
    [(_rect(-1, -1, 1, -0.2), 1), (_rect(-0.4, -0.2, 0.4, 1), 1)],  # tee
    [(_regular(32, phase=np.pi)[:17] * (1, 1.6) + (0, 0.8), 1)],  # semicircle
    [(np.array([(-0.5, -0.8), (0.5, -0.8), (1, 0.8), (-1, 0.8)]), 1)],  # trapezoid
    [(np.array([(-1, -1), (0, 0), (-1, 1)]), 1), (np.array([(1, -1), (0, 0), (1, 1)]), 1)],
    [(_regular(8, phase=np.pi / 8), 1)],  # octagon
    [(_heart(), 1)],  # heart
    [(_rect(-0.95, -0.95, 0.95, 0.95), 1), (_rect(-0.5, -0.5, 0.5, 0.5), 0)],  # frame
)
assert len(_SHAPES) == NUM_CLASSES


def _shape_mask(class_index, size, centre, side, angle):
    radians = np.deg2rad(angle)
    cos, sin = np.cos(radians) * side / 2, np.sin(radians) * side / 2
    rotation = np.array([[cos, sin], [-sin, cos]])  # counter-clockwise on screen
    canvas = np.zeros((size, size), bool)
    for polygon, value in _SHAPES[class_index]:
        canvas[_inside_polygon(polygon @ rotation.T + centre, size)] = value
    return canvas


def _size_boost(class_index):
    # Thin shapes (star, crescent, ...) are drawn larger so that all classes pass the
    # 2*32*32-pixel eligibility rule about equally often.
    fill = _shape_mask(class_index, 100, np.array([50.0, 50.0]), 100, 0).mean()
    return float(np.clip(np.sqrt(0.6 / fill), 1, 1.25))


_SIZE_BOOST = tuple(_size_boost(c) for c in range(NUM_CLASSES))


def _hsv_to_rgb(hue, saturation, value):
    return np.array(colorsys.hsv_to_rgb(hue % 1, saturation, value), np.float32) * 255


def _cubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of a bicubic resize (Keys, a = -0.75).

    Half-pixel centres and replicated borders, as OpenCV's INTER_CUBIC: output pixel i
    samples the input at (i + 0.5) * in_size / out_size - 0.5.
    """
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    lower = np.floor(source)
    fraction = source - lower
    a = -0.75
    distances = np.stack([1 + fraction, fraction, 1 - fraction, 2 - fraction], 1)  # (out, 4)
    near = ((a + 2) * distances - (a + 3)) * distances**2 + 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a
    weights = np.where(distances <= 1, near, far)
    taps = np.clip(lower[:, None].astype(np.int64) + np.arange(-1, 3), 0, in_size - 1)
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size)[:, None], taps), weights)
    return matrix


def _smooth_noise(rng, size, cells):
    grid = rng.random((cells, cells)).astype(np.float32)
    matrix = _cubic_matrix(cells, size)
    return (matrix @ grid.astype(np.float64) @ matrix.T).astype(np.float32)


def _appearance(rng, class_index, size, centre):
    hue = (class_index * 0.382 + 0.05) % 1 + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)
    primary = _hsv_to_rgb(hue, rng.uniform(0.65, 1), rng.uniform(0.75, 1))
    secondary = _hsv_to_rgb(hue + 0.08, rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.5))
    if rng.random() < _SWAPPED_COLOURS:
        primary, secondary = secondary, primary
    period = (6 + 3 * (class_index // 5)) * rng.uniform(*_PERIOD_RANGE)
    spread = _ORIENTATION_SPREAD
    theta = np.deg2rad((class_index * 47) % 180 + rng.uniform(-spread, spread))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, period)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    kind = class_index % 5
    if kind == 0:  # stripes
        pattern = np.sin(2 * np.pi * u / period) > 0
    elif kind == 1:  # checks
        pattern = (np.floor(u / period) + np.floor(v / period)) % 2 > 0
    elif kind == 2:  # dots
        pattern = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period) > 0.5
    elif kind == 3:  # concentric rings around the object centre
        pattern = np.sin(2 * np.pi * np.hypot(xx - centre[0], yy - centre[1]) / period) > 0
    else:  # blobs
        pattern = _smooth_noise(rng, size, max(2, int(size / period / 1.5))) > 0.5
    pattern = pattern.astype(np.float32)[..., None]
    shading = 0.85 + 0.3 * _smooth_noise(rng, size, 2)[..., None]
    return (primary * (1 - pattern) + secondary * pattern) * shading


def _background(rng, size):
    base = _hsv_to_rgb(rng.random(), rng.uniform(0, 0.25), rng.uniform(0.35, 0.8))
    image = base * (0.7 + 0.6 * _smooth_noise(rng, size, 4)[..., None])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, period = rng.uniform(0, np.pi), rng.uniform(3, 20)
    grating = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    image = image + rng.uniform(5, 20) * grating[..., None]
    for _ in range(rng.integers(6, 16)):
        saturated = rng.random() < 0.3
        colour = _hsv_to_rgb(rng.random(), rng.uniform(0.6, 1) if saturated else 0.15, rng.random())
        x, y = rng.integers(0, size, 2)
        if rng.random() < 0.5:
            end = (x + rng.integers(-40, 40), y + rng.integers(-40, 40))
            image[_on_segment((x, y), end, int(rng.integers(1, 3)), size)] = colour
        else:
            axes = rng.integers(2, 7, 2)
            image[_inside_ellipse((x, y), axes, rng.uniform(0, 180), size)] = colour
    return image.astype(np.float32)


def _on_segment(start, end, thickness, size):
    """(S, S) bool: pixel centres within thickness / 2 of the segment start-end, (x, y)."""
    xx, yy = _pixel_grid(size)
    (x0, y0), (x1, y1) = start, end
    length2 = max((x1 - x0) ** 2 + (y1 - y0) ** 2, 1)
    t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / length2, 0, 1)
    return np.hypot(xx - x0 - t * (x1 - x0), yy - y0 - t * (y1 - y0)) <= thickness / 2


def _inside_ellipse(centre, axes, angle, size):
    """(S, S) bool: pixel centres inside the ellipse of half-axes `axes`, turned `angle`°."""
    xx, yy = _pixel_grid(size)
    radians = np.deg2rad(angle)
    dx, dy = xx - centre[0], yy - centre[1]
    along = dx * np.cos(radians) + dy * np.sin(radians)
    across = -dx * np.sin(radians) + dy * np.cos(radians)
    return (along / axes[0]) ** 2 + (across / axes[1]) ** 2 <= 1
