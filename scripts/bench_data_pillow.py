#!/usr/bin/env python3
"""Pillow reference for scripts/bench-data: the same per-image pipeline as ALBEF pretraining
(decode → RandomResizedCrop(size, scale (0.2, 1), ratio (3/4, 4/3), bicubic) → horizontal flip
p=0.5 → RandAugment(N=2, M=7) with ALBEF's op list, fill 128), single process, one core.
Written with Pillow ops only (no torch/torchvision/cv2). Prints `pillow_img_s=X`.

Usage: bench_data_pillow.py SHARD.tar [--image-size 256] [--seconds 5] [--samples 500]
"""
import argparse, io, math, random, tarfile, time
from PIL import Image, ImageEnhance, ImageOps

FILL = (128, 128, 128)


def rrc_box(w, h, rnd, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    area = w * h
    for _ in range(10):
        target = area * rnd.uniform(*scale)
        aspect = math.exp(rnd.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y, x = rnd.randint(0, h - ch), rnd.randint(0, w - cw)
            return x, y, cw, ch
    r = w / h
    if r < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif r > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def affine(img, m):
    # PIL's AFFINE takes the inverse map (output → input), like cv2's WARP_INVERSE_MAP.
    return img.transform(img.size, Image.AFFINE, m, resample=Image.BILINEAR, fillcolor=FILL)


OPS = ["Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
       "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"]


def rand_augment(img, rnd):
    for name in [OPS[rnd.randrange(len(OPS))] for _ in range(2)]:
        if rnd.random() > 0.5:
            continue
        if name == "AutoContrast":
            img = ImageOps.autocontrast(img)
        elif name == "Equalize":
            img = ImageOps.equalize(img)
        elif name == "Brightness":
            img = ImageEnhance.Brightness(img).enhance(1.36)
        elif name == "Sharpness":
            img = ImageEnhance.Sharpness(img).enhance(1.36)
        elif name in ("ShearX", "ShearY"):
            s = 0.21 * (-1 if rnd.random() > 0.5 else 1)
            img = affine(img, (1, -s, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, -s, 1, 0))
        elif name in ("TranslateX", "TranslateY"):
            d = 7 * (-1 if rnd.random() > 0.5 else 1)
            img = affine(img, (1, 0, d, 0, 1, 0) if name == "TranslateX" else (1, 0, 0, 0, 1, d))
        elif name == "Rotate":
            a = 21 * (-1 if rnd.random() < 0.5 else 1)
            img = img.rotate(a, resample=Image.BILINEAR, fillcolor=FILL)
    return img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shard")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--samples", type=int, default=500)
    a = ap.parse_args()
    blobs = []
    with tarfile.open(a.shard) as tf:
        for m in tf:
            if m.name.endswith((".jpg", ".jpeg", ".png")):
                blobs.append(tf.extractfile(m).read())
                if len(blobs) >= a.samples:
                    break
    rnd = random.Random(1)
    size = a.image_size

    def one(b):
        img = Image.open(io.BytesIO(b)).convert("RGB")
        x, y, w, h = rrc_box(img.width, img.height, rnd)
        img = img.resize((size, size), Image.BICUBIC, box=(x, y, x + w, y + h))
        if rnd.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return rand_augment(img, rnd)

    for b in blobs[:20]:
        one(b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        for _ in range(10):
            one(blobs[n % len(blobs)])
            n += 1
    print("pillow_img_s=%.1f" % (n / (time.perf_counter() - start)))


if __name__ == "__main__":
    main()
