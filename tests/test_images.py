"""Image data: the preprocessing spec, labelled image folders and the photo crops."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgekit.data.images import ImagePreprocessConfig, load_image_folder, photo_crops
from edgekit.errors import InputError


def test_preprocess_round_trips_and_refuses_bad_fields():
    pre = ImagePreprocessConfig(resize=40, crop=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), interpolation="bicubic")
    assert ImagePreprocessConfig.from_dict(pre.to_dict()) == pre and pre.input_shape == [3, 32, 32]
    with pytest.raises(InputError, match="interpolation 'lanczos' is not allowed; allowed: bilinear, bicubic"):
        ImagePreprocessConfig(40, 32, (0.5,) * 3, (0.2,) * 3, interpolation="lanczos")
    with pytest.raises(InputError, match="1 <= crop <= resize"):
        ImagePreprocessConfig(16, 32, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(InputError, match="needs 1 mean and 1 positive std"):
        ImagePreprocessConfig(40, 32, (0.5,) * 3, (0.2,) * 3, channels="L")
    with pytest.raises(InputError, match="unknown field"):
        ImagePreprocessConfig.from_dict({**pre.to_dict(), "flip": True})


def test_preprocess_values_layout_and_centre_crop():
    # 60 x 40 picture: left third red, middle third green, right third blue. Shorter side 40 -> 48, centre 32 x 32
    # crop of a 72 x 48 image keeps columns 20..51, which are all inside the green third (24..47) only at the middle.
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :20, 0], a[:, 20:40, 1], a[:, 40:, 2] = 255, 200, 255
    pre = ImagePreprocessConfig(resize=48, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5), interpolation="nearest")
    x = pre.apply([Image.fromarray(a)])
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    centre = x[0, :, :, 16]  # channel values down the middle column: pure green
    np.testing.assert_allclose(centre[1], (200 / 255 - 0.5) / 0.25, rtol=1e-6)
    np.testing.assert_allclose(centre[0], -1.0) and np.testing.assert_allclose(centre[2], -1.0)
    assert x[0, 0, 0, 0] == pytest.approx(1.0)  # left edge of the crop is still in the red third


def _save(path, value=0, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_image_folder_reads_classes_and_refuses_bad_input(tmp_path):
    for c, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            _save(tmp_path / "ok" / c / f"{i}.png", 40 * i)
    ds = load_image_folder(tmp_path / "ok")
    assert ds.label_names == ("cat", "dog") and ds.labels == (0, 0, 1, 1, 1) and len(ds) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty")
    _save(tmp_path / "one" / "cat" / "0.png")
    with pytest.raises(InputError, match="has one class"):
        load_image_folder(tmp_path / "one")
    _save(tmp_path / "bad" / "a" / "0.png")
    (tmp_path / "bad" / "b").mkdir(parents=True)
    (tmp_path / "bad" / "b" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=r"cannot read image .*x\.jpg"):
        load_image_folder(tmp_path / "bad")


def test_photo_crops_are_seeded_and_calibration_never_shares_a_picture_with_evaluation(tmp_path):
    # six flat pictures, each a different grey level: every crop is flat, and its level names its picture
    levels = [0, 50, 100, 150, 200, 250]
    for v in levels:
        Image.fromarray(np.full((600, 800, 3), v, np.uint8)).save(tmp_path / f"p{v}.png")
    cal, held = photo_crops(n_calibration=40, n_eval=120, size=32, seed=3, folder=tmp_path)
    assert len(cal) == 40 and len(held) == 120 and held[0].size == (32, 32)
    cal_pics = {int(np.asarray(c)[0, 0, 0]) for c in cal}
    held_pics = {int(np.asarray(h)[0, 0, 0]) for h in held}
    assert cal_pics and held_pics and not cal_pics & held_pics and cal_pics | held_pics == set(levels)
    again = photo_crops(n_calibration=40, n_eval=120, size=32, seed=3, folder=tmp_path)
    assert all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(again[0], cal))
    # another seed moves the crops but never the pictures: its calibration stays off the held-out pictures
    cal7, _ = photo_crops(n_calibration=40, n_eval=0, size=32, seed=7, folder=tmp_path)
    assert {int(np.asarray(c)[0, 0, 0]) for c in cal7} == cal_pics


def test_photo_variants_stay_on_one_side_and_bad_folders_are_one_line(tmp_path):
    from edgekit.data.images import split_pictures

    files = [f"/x/{n}-{v}.webp" for n in "abcdef" for v in "dl"]
    cal, held = split_pictures(files)
    group = (lambda f: f.rsplit("-", 1)[0])
    assert not {group(f) for f in cal} & {group(f) for f in held} and len(cal) + len(held) == len(files)
    Image.fromarray(np.zeros((600, 800, 3), np.uint8)).save(tmp_path / "only.png")
    with pytest.raises(InputError, match="at least two different pictures"):
        photo_crops(folder=tmp_path)
    with pytest.raises(InputError, match="no images in .*nowhere"):
        photo_crops(folder=tmp_path / "nowhere")


def test_missing_photo_packages_name_them(monkeypatch):
    import edgekit.data.images as im

    monkeypatch.delenv(im.PHOTO_DIR_ENV, raising=False)
    for name in ("MATE_PHOTO_DIR", "PLASMA_DIR", "GNOME_DIR"):
        monkeypatch.setattr(im, name, "/nonexistent")
    with pytest.raises(InputError, match="apt-get install plasma-workspace-wallpapers mate-backgrounds"):
        photo_crops()


_PHOTOS = __import__("edgekit.data.images", fromlist=["x"]).installed_photographs()


@pytest.mark.skipif(len(_PHOTOS) < 4, reason="plasma-workspace-wallpapers / mate-backgrounds not installed")
def test_installed_photographs_are_the_default_and_split_by_picture(monkeypatch):
    from edgekit.data.images import MIN_PHOTO_SIDE, photo_source, split_pictures

    monkeypatch.delenv("EDGEKIT_PHOTO_DIR", raising=False)
    src = photo_source()
    assert src.name == "photos" and src.photographs and len(src.files) == len(_PHOTOS) >= 20
    # one file per Plasma wallpaper (it ships each at several sizes), so a picture is never on both sides
    assert len({str(__import__("pathlib").Path(f).parent) for f in src.files if "/wallpapers/" in f}) == \
        sum("/wallpapers/" in f for f in src.files)
    cal_files, eval_files = split_pictures(src.files)
    assert not set(cal_files) & set(eval_files) and len(eval_files) > len(cal_files) >= 5
    cal, held = photo_crops()
    assert len(cal) == 300 and len(held) >= 500 and min(held[0].size) == 256
    assert MIN_PHOTO_SIDE <= 1024


def test_uint8_arrays_and_legacy_vit_records_use_the_same_spec():
    """Data-set arrays (fashion-mnist) go through the same spec as photos: the batched path for images already at
    the input size equals the per-image PIL path, and a ViT manifest of the older form reads into the same spec."""
    from PIL import Image

    from edgekit.data.images import manifest_preprocess

    imgs = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    pre = ImagePreprocessConfig(28, 28, (0.286,), (0.353,), channels="L")
    fast = pre.apply(imgs)
    slow = np.stack([pre.apply_one(Image.fromarray(im)) for im in imgs])
    assert fast.shape == (3, 1, 28, 28) and np.allclose(fast, slow, atol=1e-6)
    old = {"preprocessing": {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353], "rescale": 1 / 255}}
    assert manifest_preprocess(old) == pre and manifest_preprocess({"preprocess": pre.to_dict()}) == pre
    with pytest.raises(InputError, match="records no image preprocessing"):
        manifest_preprocess({})
    with pytest.raises(InputError, match="uint8"):
        pre.apply(imgs.astype(np.float32))
