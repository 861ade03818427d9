#!/usr/bin/env python3
"""Makes the restoration train / validation / test image folders from offline sources.

Sources (nothing is downloaded at run time; fetch the packages first with `apt-get download`):
  train + validation: Debian gnome-backgrounds, plasma-workspace-wallpapers, desktop-base, and the sample images
                      bundled in scikit-image's wheel;
  test (held out, never used for training, validation or choosing anything): mate-backgrounds, ukui-wallpapers.

Each wallpaper that ships in several resolutions (KDE `contents/images/WxH.*`) counts once, at its largest size.
Images are downscaled with area averaging so the short side is --side pixels (this also removes the JPEG
artefacts of the originals, so the result can serve as "clean"), and written as 8-bit RGB PNG. Validation is every
8th training image in name order. Test images are the centre --test-crop square of each downscaled held-out image.

    python3 tools/prepare_restoration_data.py --debs DIR_OF_DEBS --out DIR
"""
import argparse
import hashlib
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_PACKAGES = ["gnome-backgrounds", "plasma-workspace-wallpapers", "desktop-base"]
TEST_PACKAGES = ["mate-backgrounds", "ukui-wallpapers"]
EXTS = {".png", ".jpg", ".jpeg", ".webp"}
# desktop-base also ships logos, icons and boot-loader art: not photographs or wallpapers.
SKIP_PARTS = {"icons", "debian-logos", "grub", "emblems", "pixmaps"}


def extract(debs: Path, package: str, into: Path) -> Path:
    deb = next(debs.glob(f"{package}_*.deb"), None)
    if deb is None:
        raise SystemExit(f"{debs}: no {package}_*.deb (run: apt-get download {package})")
    target = into / package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return target


def units(root: Path):
    """One (name, file) per distinct picture: the largest file of each multi-resolution set."""
    groups = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() not in EXTS or not f.is_file() or SKIP_PARTS & set(f.parts):
            continue
        multi = f.parent.name == "images" and f.parent.parent.name == "contents"
        key = str(f.parent.parent.parent.relative_to(root)) if multi else str(f.relative_to(root))
        groups.setdefault(key, []).append(f)
    for key, files in sorted(groups.items()):
        yield key, max(files, key=lambda p: p.stat().st_size)


def load(file: Path, side: int):
    try:
        im = Image.open(file)
        im.load()
    except Exception as e:  # a broken file in a package is skipped, not fatal
        print(f"skip {file}: {e}")
        return None
    im = im.convert("RGB")
    w, h = im.size
    if min(w, h) < side:
        print(f"skip {file}: {w}x{h} is smaller than {side}")
        return None
    s = side / min(w, h)
    return im.resize((max(side, round(w * s)), max(side, round(h * s))), Image.Resampling.BOX)


def name_of(package: str, key: str) -> str:
    stem = key.replace("/", "_").rsplit(".", 1)[0][-60:]
    return f"{package}_{stem}_{hashlib.sha1(key.encode()).hexdigest()[:6]}.png"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--test-crop", type=int, default=256)
    a = ap.parse_args()
    for d in ["train", "val", "test"]:
        (a.out / d).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = []
        for pkg in TRAIN_PACKAGES:
            for key, f in units(extract(a.debs, pkg, tmp)):
                im = load(f, a.side)
                if im is not None:
                    train.append((name_of(pkg, key), im))
        import skimage.data

        for key in ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"]:
            arr = getattr(skimage.data, key)()
            im = Image.fromarray(np.asarray(arr)).convert("RGB")
            train.append((f"skimage_{key}.png", im))
        train.sort()
        for i, (name, im) in enumerate(train):
            im.save(a.out / ("val" if i % 8 == 7 else "train") / name)
        for pkg in TEST_PACKAGES:
            for key, f in units(extract(a.debs, pkg, tmp)):
                im = load(f, a.side)
                if im is None:
                    continue
                w, h = im.size
                c = a.test_crop
                x, y = (w - c) // 2, (h - c) // 2
                im.crop((x, y, x + c, y + c)).save(a.out / "test" / name_of(pkg, key))
    for d in ["train", "val", "test"]:
        print(d, len(list((a.out / d).iterdir())))


if __name__ == "__main__":
    main()
