"""Makes the image fixtures of DataPipelineTests once (Pillow); outputs are committed.

Run: python3 make_images.py   (in this folder)
"""
import json
from PIL import Image

px = [[(r * 60 + c * 10, 255 - r * 50, (r * c * 17) % 256) for c in range(4)] for r in range(4)]
flat = [v for row in px for p in row for v in p]

rgb = Image.new("RGB", (4, 4)); rgb.putdata([p for row in px for p in row]); rgb.save("rgb4x4.png")
rgba = Image.new("RGBA", (4, 4)); rgba.putdata([p + ((i * 16) % 256,) for i, p in enumerate(p for row in px for p in row)]); rgba.save("rgba4x4.png")
gray = Image.new("L", (4, 4)); gray.putdata([i * 15 for i in range(16)]); gray.save("gray4x4.png")
pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16); pal.save("palette4x4.png")
g16 = Image.new("I;16", (4, 4)); g16.putdata([i * 4000 for i in range(16)]); g16.save("gray16_4x4.png")

# 32x32 JPEG with four flat 16x16 blocks (block-aligned so the colours survive within a tolerance).
blocks = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 60)]
j = Image.new("RGB", (32, 32))
for y in range(32):
    for x in range(32):
        j.putpixel((x, y), blocks[(y // 16) * 2 + (x // 16)])
j.save("blocks32.jpg", quality=95)
j.convert("L").save("blocks32_gray.jpg", quality=95)
j.convert("CMYK").save("blocks32_cmyk.jpg", quality=95)

expected = {
    "rgb4x4.png": flat,
    "rgba4x4.png": flat,
    "gray4x4.png": [v for i in range(16) for v in (i * 15,) * 3],
    "palette4x4.png": [v for p in pal.convert("RGB").getdata() for v in p],
    "gray16_4x4.png": [v for i in range(16) for v in ((i * 4000) >> 8,) * 3],
    "blocks32.jpg": {"blocks": blocks, "tolerance": 6},
    "blocks32_gray.jpg": {"blocks": [Image.new("RGB", (1, 1), b).convert("L").getpixel((0, 0)) for b in blocks], "tolerance": 3},
    "blocks32_cmyk.jpg": {"blocks": blocks, "tolerance": 8},
    "pillow_decoded_blocks32": [v for p in Image.open("blocks32.jpg").convert("RGB").getdata() for v in p][:96],
}
json.dump(expected, open("expected.json", "w"))
