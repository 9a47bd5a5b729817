"""Makes the WebDataset fixtures once (pip install webdataset Pillow); outputs are committed.

good.tar: 5 samples written by webdataset.TarWriter (keys sample000..sample004; 8x8 flat-colour
images, jpg except sample002 which is png; sample001 has a .json; sample004 has a 120-char key,
which makes Python's tarfile write a pax/GNU long name). expected.json lists keys, captions, colours.
bad.tar (tarfile): one good sample then one of each bad kind, see expected.json["bad"].
Run: python3 make_shards.py   (in this folder)
"""
import io, json, tarfile
import webdataset as wds
from PIL import Image

def img(color, fmt):
    b = io.BytesIO(); Image.new("RGB", (8, 8), color).save(b, format=fmt, quality=95); return b.getvalue()

colors = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (240, 240, 20), (20, 240, 240)]
captions = ["a red square", "A green square!", "blue square, png", "yellow  square", "cyan square with a long key"]
keys = ["sample000", "sample001", "sample002", "sample003", "s" * 120]
with wds.TarWriter("good.tar") as w:
    for i, (k, c, t) in enumerate(zip(keys, colors, captions)):
        s = {"__key__": k, "txt": t}
        if i == 2: s["png"] = img(c, "PNG")
        else: s["jpg"] = img(c, "JPEG")
        if i == 1: s["json"] = json.dumps({"url": "http://example.com/1.jpg", "width": 8})
        w.write(s)

def add(tf, name, data):
    ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))

bad = []
with tarfile.open("bad.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
    add(tf, "ok.jpg", img((1, 2, 3), "JPEG")); add(tf, "ok.txt", b"fine caption")
    add(tf, "nocap.jpg", img((1, 2, 3), "JPEG")); bad.append(["nocap", "missing_caption"])
    add(tf, "noimg.txt", b"caption without image"); bad.append(["noimg", "missing_image"])
    add(tf, "empty.jpg", img((1, 2, 3), "JPEG")); add(tf, "empty.txt", b"  \n"); bad.append(["empty", "empty_caption"])
    add(tf, "latin1.jpg", img((1, 2, 3), "JPEG")); add(tf, "latin1.txt", "caf\xe9".encode("latin-1")); bad.append(["latin1", "non_utf8_caption"])
    add(tf, "long.jpg", img((1, 2, 3), "JPEG")); add(tf, "long.txt", b"word " * 2500); bad.append(["long", "overlong_caption"])
    add(tf, "corrupt.jpg", img((1, 2, 3), "JPEG")[:60]); add(tf, "corrupt.txt", b"cut image"); bad.append(["corrupt", "truncated_image"])
    add(tf, "garbage.jpg", b"this is not an image at all"); add(tf, "garbage.txt", b"garbage image"); bad.append(["garbage", "unknown_image_format"])
    add(tf, "ok.txt", b"the same key again"); add(tf, "ok.jpg", img((1, 2, 3), "JPEG")); bad.append(["ok", "duplicate_key"])
    add(tf, "last.jpg", img((9, 9, 9), "JPEG")); add(tf, "last.txt", b"last good one")

json.dump({"keys": keys, "captions": captions, "colors": colors,
           "bad_keys": ["ok", "nocap", "noimg", "empty", "latin1", "long", "corrupt", "garbage", "ok", "last"],
           "bad": bad}, open("expected.json", "w"))

# gnu.tar: GNU long names (typeflag L) for a 150-char key.
with tarfile.open("gnu.tar", "w", format=tarfile.GNU_FORMAT) as tf:
    add(tf, "g" * 150 + ".jpg", img((5, 5, 5), "JPEG")); add(tf, "g" * 150 + ".txt", b"gnu long name")
