"""The documentation stays true: what README.md and docs/*.md name exists.

Every path of `configs/`, `scripts/`, `cwt_jax/`, `tests/` and `docs/` they name is a file
or folder of the repository (brace lists `{a,b}`, ranges `{0..3}` and `*` expanded), every
`--config.KEY` is a key of some config's `get_config()`, and every relative link reaches
its file and, for `#anchor`, a heading of the target page (GitHub's slugs). A failure
names the page and line of each thing missing. The pictures' command is tested too:
`scripts/plot_training.py` on a tiny work dir.
"""

import glob
import importlib.util
import itertools
import json
import os
import re
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]

# --config.KEY placeholders, and a misspelt key that the docs quote in an error message.
NOT_KEYS = {"key", "KEY", "inner.optimiser"}
PATH = re.compile(r"(?<![\w/.-])(?:configs|scripts|cwt_jax|tests|docs)/[\w./{}*,-]*")
CONFIG_KEY = re.compile(r"--config\.(\w+(?:\.\w+)*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def lines(path):
    """(line number, line, inside a fenced code block) for each line of a page."""
    with open(path) as file:
        fenced = False
        for number, line in enumerate(file.read().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            yield number, line, fenced


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    """The anchors of a page's headings (a repeated heading gets -1, -2, ...)."""
    seen, found = {}, set()
    for _, line, fenced in lines(path):
        match = re.match(r"#{1,6} (.*)", line)
        if match and not fenced:
            anchor = slug(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(f"{anchor}-{count}" if count else anchor)
    return found


def expand(pattern):
    """The paths a `{a,b}` / `{0..3}` pattern names."""
    parts = re.split(r"(\{[^{}]*\})", pattern)
    choices = []
    for part in parts:
        range_ = re.fullmatch(r"\{(\d+)\.\.(\d+)\}", part)
        if range_:
            choices.append([str(i) for i in range(int(range_.group(1)), int(range_.group(2)) + 1)])
        elif part.startswith("{") and part.endswith("}"):
            choices.append(part[1:-1].split(","))
        else:
            choices.append([part])
    return ["".join(choice) for choice in itertools.product(*choices)]


def path_exists(path, repo):
    """Whether a named path exists; `module.Name` also counts as `module.py`."""
    full = os.path.join(repo, path)
    if "*" in path:
        return bool(glob.glob(full))
    if os.path.exists(full):
        return True
    stem, dot, _ = path.rpartition(".")
    return bool(dot) and os.path.isfile(os.path.join(repo, stem + ".py"))


def flat_keys(config, prefix=""):
    """Every dotted key of a ConfigDict (sections included)."""
    keys = set()
    for name, value in config.items():
        key = prefix + name
        keys.add(key)
        if hasattr(value, "items"):
            keys |= flat_keys(value, key + ".")
    return keys


def config_keys(repo=REPO):
    """The keys of every configs/*.py that has a `get_config()`."""
    sys.path.insert(0, repo)  # the config files import configs.common
    try:
        keys = set()
        for path in sorted(glob.glob(os.path.join(repo, "configs", "*.py"))):
            name = "_docs_config_" + os.path.basename(path)[:-3]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, "get_config"):
                keys |= flat_keys(module.get_config())
        return keys
    finally:
        sys.path.remove(repo)


def key_exists(key, keys):
    """Whether a --config key exists; optimizer_args take any argument of the optimiser."""
    if key in keys or key in NOT_KEYS:
        return True
    section, found, _ = key.partition(".optimizer_args.")
    return bool(found) and f"{section}.optimizer_args" in keys


def problems(page, keys, repo=REPO):
    """What a page names that does not exist, each as 'page:line: what'."""
    where = os.path.relpath(page, repo)
    found = []
    for number, line, fenced in lines(page):
        for match in PATH.finditer(line):
            named = match.group(0).rstrip(".,:;")
            for path in expand(named):
                if not path_exists(path, repo):
                    found.append(f"{where}:{number}: path {path} does not exist")
        for key in CONFIG_KEY.findall(line):
            if not key_exists(key, keys):
                found.append(f"{where}:{number}: --config.{key} is no config key")
        if fenced:
            continue
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(page), file_part))
            if file_part and not os.path.exists(linked):
                found.append(f"{where}:{number}: link {target}: {file_part} does not exist")
            elif anchor and anchor not in anchors(linked if file_part else page):
                found.append(f"{where}:{number}: link {target}: no heading #{anchor}")
    return found


@pytest.fixture(scope="module")
def keys():
    return config_keys()


def test_every_path_config_key_and_link_of_the_docs_exists(keys):
    found = [problem for page in PAGES for problem in problems(page, keys)]
    assert not found, "\n".join(found)


def test_the_checker_flags_what_is_made_up(keys, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "real_1shot.py").touch()
    (docs / "other.md").write_text("# Other page\n\n## A heading (with `code`)\n")
    page = docs / "page.md"
    page.write_text(
        "# Page\n"
        "`configs/real_{1,5}shot.py` and `configs/real_*.py`\n"
        "`scripts/made_up.py`, then --config.inner.steps=5 --config.inner.no_such_key=1\n"
        "[fine](other.md#a-heading-with-code) [also](#page) [gone](missing.md)\n"
        "[no anchor](other.md#no-such-heading) --config.inner.optimizer_args.b1=0.8\n"
        "```bash\n"
        "# not a heading\n"
        "python scripts/also_made_up.py [not a link](nowhere.md)\n"
        "```\n"
    )
    assert problems(str(page), keys, repo=str(tmp_path)) == [
        "docs/page.md:2: path configs/real_5shot.py does not exist",
        "docs/page.md:3: path scripts/made_up.py does not exist",
        "docs/page.md:3: --config.inner.no_such_key is no config key",
        "docs/page.md:4: link missing.md: missing.md does not exist",
        "docs/page.md:5: link other.md#no-such-heading: no heading #no-such-heading",
        "docs/page.md:8: path scripts/also_made_up.py does not exist",
    ]


def test_slugs_are_githubs():
    assert (
        slug("Protocol (PATNet's `test.py` and loaders)") == "protocol-patnets-testpy-and-loaders"
    )
    assert slug("The main job's curves") == "the-main-jobs-curves"
    assert slug("PASCAL-5i (VOC 2012 + SBD)") == "pascal-5i-voc-2012--sbd"
    assert expand("configs/{pascal,coco}_fold{0..1}.py") == [
        "configs/pascal_fold0.py",
        "configs/pascal_fold1.py",
        "configs/coco_fold0.py",
        "configs/coco_fold1.py",
    ]


def test_the_readme_is_short_and_links_every_page():
    with open(PAGES[0]) as file:
        readme = file.read()
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    pages = {os.path.relpath(page, REPO) for page in PAGES[1:]}
    assert pages and pages <= linked, f"README.md does not link {sorted(pages - linked)}"


def load_script(name):
    path = os.path.join(REPO, "scripts", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_workdir(workdir):
    """A tiny work dir: metrics of both stages (one step resumed) and a 2-run results.json."""
    records = [
        {"stage": "pretrain", "step": 1, "loss": 2.0, "grad_norm": 1.0},
        {"stage": "pretrain", "step": 10, "val_miou": 0.2},
        {"stage": "pretrain", "step": 20, "val_miou": 0.3},
        {"stage": "metatrain", "step": 5, "loss": 0.5},
        {"stage": "metatrain", "step": 5, "val_miou": 0.55, "val_support_only_miou": 0.5},
        {"stage": "metatrain", "step": 10, "val_miou": 0.58, "val_support_only_miou": 0.5},
        {"stage": "metatrain", "step": 10, "val_miou": 0.6, "val_support_only_miou": 0.5},
        {"stage": "eval", "step": 0, "cwt_miou": 0.6, "support_only_miou": 0.5},
    ]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    runs = [
        {
            "seed": seed,
            "cwt": {"per_class_iou": {"1": 0.6 + d, "2": 0.4 + d}},
            "support_only": {"per_class_iou": {"1": 0.5 - d, "2": 0.3}},
        }
        for seed, d in ((0, 0.1), (1, -0.1))
    ]
    results = {
        "class_names": {"2": "square", "1": "circle"},
        "cwt": {"miou": 0.5},
        "support_only": {"miou": 0.4},
        "runs": runs,
    }
    (workdir / "results.json").write_text(json.dumps(results))


def test_plot_training_draws_the_validation_curves_and_per_class_bars(tmp_path, capsys):
    plot_training = load_script("plot_training")
    write_workdir(tmp_path)
    curves = plot_training.validation_curves(
        plot_training.read_metrics(str(tmp_path / "metrics.jsonl"))
    )
    assert curves == {
        "stage 1: validation mIoU (base classes)": ([10, 20], [0.2, 0.3]),
        "meta-training: CWT": ([5, 10], [0.55, 0.6]),  # the resumed step's last value
        "meta-training: support-only": ([5, 10], [0.5, 0.5]),
    }
    with open(tmp_path / "results.json") as file:
        bars = plot_training.per_class_iou(json.load(file))
    assert bars["names"] == ["circle", "square"]
    np.testing.assert_allclose(bars["cwt"], [[0.6, 0.4], [0.1, 0.1]])
    np.testing.assert_allclose(bars["support_only"], [[0.5, 0.3], [0.1, 0.0]], atol=1e-12)
    assert bars["miou"] == {"cwt": 0.5, "support_only": 0.4}

    out_dir = tmp_path / "pictures"
    plot_training.main([str(tmp_path), "--out_dir", str(out_dir)])
    assert capsys.readouterr().out.startswith("Wrote training_curves.png and per_class_iou.png")
    for name in ("training_curves.png", "per_class_iou.png"):
        data = (out_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 400 <= width <= 1000 and 200 <= height <= 400
        assert len(data) < 150_000


def test_plot_training_names_a_missing_file(tmp_path, capsys):
    plot_training = load_script("plot_training")
    with pytest.raises(SystemExit) as raised:
        plot_training.main([str(tmp_path), "--out_dir", str(tmp_path / "pictures")])
    assert raised.value.code == 1
    assert f"{tmp_path / 'metrics.jsonl'} does not exist" in capsys.readouterr().err


def test_plot_overlays_puts_the_outlined_support_beside_the_overlays(tmp_path, capsys):
    plot_overlays = load_script("plot_overlays")
    (tmp_path / "predictions").mkdir()
    support = np.full((64, 64, 3), 100, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 3  # class 3; 1 elsewhere would mark nothing
    cv2.imwrite(str(tmp_path / "support.png"), support)
    cv2.imwrite(str(tmp_path / "support_mask.png"), mask)
    for stem, grey in (("q0", 50), ("q1", 200)):
        cv2.imwrite(
            str(tmp_path / "predictions" / f"{stem}_overlay.png"),
            np.full((40, 30, 3), grey, np.uint8),
        )
    out = tmp_path / "picture.png"
    plot_overlays.main(
        ["--example_dir", str(tmp_path), "--out", str(out), "--class_id=3", "--queries=q0,q1"]
    )
    assert capsys.readouterr().out == f"Wrote {out}\n"
    picture = cv2.imread(str(out))
    tile, title = plot_overlays.TILE, plot_overlays.TITLE
    assert picture.shape == (title + tile, 3 * tile, 3)
    support_tile = picture[title:, :tile]
    assert (support_tile == 255).all(axis=-1).any()  # the outline, white on black
    assert (support_tile[5, 5] == 100).all()  # outside the mask: the image as it is
    assert (picture[title + 80, tile + 80] == 50).all() and (picture[title + 80, -80] == 200).all()
