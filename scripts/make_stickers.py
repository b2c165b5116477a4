"""Draw imchat's own sticker packs and built-in avatars with Pillow.

Owns the generated pictures under `asset/plugins/doutu/` (packs in the article's `info.json`
format `{id, icon, assets[]}`, listed in `asset/plugins/doutu/index.json`) and
`asset/img/avatar/`. The output is committed; run this again only to change the drawings:

    .venv/bin/python scripts/make_stickers.py

Shapes are drawn at 4x and scaled down for smooth edges. Only Pillow's built-in font is used,
so the result does not depend on the fonts installed on the machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
DOUTU = ROOT / "asset" / "plugins" / "doutu"
AVATARS = ROOT / "asset" / "img" / "avatar"

SIZE = 160
SCALE = 4
BIG = SIZE * SCALE

YELLOW = (255, 204, 77)
YELLOW_DARK = (232, 160, 40)
INK = (74, 46, 28)
WHITE = (255, 255, 255)
PINK = (255, 120, 150)
RED = (230, 70, 70)
BLUE = (90, 160, 235)

Drawing = Callable[[ImageDraw.ImageDraw, int], None]


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def p(value: float) -> int:
    """A coordinate on the 0..SIZE grid, scaled to the drawing canvas."""
    return round(value * SCALE)


def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    return p(x0), p(y0), p(x1), p(y1)


def canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGBA", (BIG, BIG), (0, 0, 0, 0))
    return image, ImageDraw.Draw(image)


def finish(image: Image.Image) -> Image.Image:
    return image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def face(draw: ImageDraw.ImageDraw, color: tuple[int, int, int] = YELLOW) -> None:
    draw.ellipse(box(14, 18, 146, 150), fill=(0, 0, 0, 40))  # soft shadow
    draw.ellipse(box(10, 10, 142, 142), fill=color, outline=YELLOW_DARK, width=p(3))


def dot_eyes(draw: ImageDraw.ImageDraw, y: float = 62) -> None:
    for x in (52, 100):
        draw.ellipse(box(x - 8, y - 11, x + 8, y + 11), fill=INK)
        draw.ellipse(box(x - 3, y - 7, x + 2, y - 2), fill=WHITE)


def cheeks(draw: ImageDraw.ImageDraw) -> None:
    for x in (36, 116):
        draw.ellipse(box(x - 11, 84, x + 11, 96), fill=(255, 140, 120, 150))


def smile_mouth(draw: ImageDraw.ImageDraw) -> None:
    draw.arc(box(48, 62, 104, 112), start=20, end=160, fill=INK, width=p(5))


def heart(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float,
          color: tuple[int, ...] = PINK) -> None:
    draw.ellipse(box(cx - r, cy - r * 0.8, cx, cy + r * 0.2), fill=color)
    draw.ellipse(box(cx, cy - r * 0.8, cx + r, cy + r * 0.2), fill=color)
    draw.polygon([(p(cx - r * 0.97), p(cy - 0.1 * r)), (p(cx + r * 0.97), p(cy - 0.1 * r)),
                  (p(cx), p(cy + r * 1.05))], fill=color)


def draw_smile(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    dot_eyes(draw)
    cheeks(draw)
    smile_mouth(draw)


def draw_laugh(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    for x in (52, 100):  # ^ ^ eyes
        draw.line([(p(x - 12), p(66)), (p(x), p(54)), (p(x + 12), p(66))], fill=INK, width=p(5),
                  joint="curve")
    draw.chord(box(40, 70, 112, 126), start=0, end=180, fill=INK)
    draw.chord(box(56, 100, 96, 126), start=180, end=360, fill=(240, 100, 100))
    cheeks(draw)


def draw_wink(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    draw.ellipse(box(44, 51, 60, 73), fill=INK)
    draw.ellipse(box(49, 55, 54, 60), fill=WHITE)
    draw.arc(box(88, 52, 112, 72), start=200, end=340, fill=INK, width=p(5))
    cheeks(draw)
    draw.arc(box(52, 70, 100, 110), start=15, end=150, fill=INK, width=p(5))
    draw.ellipse(box(84, 96, 100, 114), fill=(240, 100, 110))


def draw_love(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    heart(draw, 52, 62, 15, RED)
    heart(draw, 100, 62, 15, RED)
    smile_mouth(draw)


def draw_sad(draw: ImageDraw.ImageDraw) -> None:
    face(draw, (255, 214, 110))
    dot_eyes(draw, 64)
    draw.line([(p(38), p(44)), (p(60), p(38))], fill=INK, width=p(4))
    draw.line([(p(92), p(38)), (p(114), p(44))], fill=INK, width=p(4))
    draw.arc(box(52, 96, 100, 130), start=200, end=340, fill=INK, width=p(5))
    draw.ellipse(box(36, 76, 50, 98), fill=BLUE)
    draw.polygon([(p(36.5), p(84)), (p(49.5), p(84)), (p(43), p(70))], fill=BLUE)


def draw_angry(draw: ImageDraw.ImageDraw) -> None:
    face(draw, (250, 120, 90))
    draw.line([(p(36), p(44)), (p(64), p(56))], fill=INK, width=p(6))
    draw.line([(p(88), p(56)), (p(116), p(44))], fill=INK, width=p(6))
    dot_eyes(draw, 68)
    draw.arc(box(54, 100, 98, 128), start=200, end=340, fill=INK, width=p(6))
    for dx, dy in ((0, 0), (8, 6)):  # anger mark
        draw.line([(p(114 + dx), p(18 + dy)), (p(124 + dx), p(28 + dy))], fill=RED, width=p(4))
        draw.line([(p(124 + dx), p(18 + dy)), (p(114 + dx), p(28 + dy))], fill=RED, width=p(4))


def draw_wow(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    for x in (52, 100):
        draw.ellipse(box(x - 12, 48, x + 12, 74), fill=WHITE, outline=INK, width=p(4))
        draw.ellipse(box(x - 5, 55, x + 5, 67), fill=INK)
    draw.ellipse(box(62, 88, 90, 122), fill=INK)
    draw.ellipse(box(68, 104, 84, 120), fill=(240, 100, 100))


def draw_cool(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    draw.rounded_rectangle(box(30, 48, 72, 76), radius=p(10), fill=(40, 40, 60))
    draw.rounded_rectangle(box(80, 48, 122, 76), radius=p(10), fill=(40, 40, 60))
    draw.line([(p(70), p(56)), (p(82), p(56))], fill=(40, 40, 60), width=p(5))
    draw.line([(p(38), p(54)), (p(48), p(54))], fill=(150, 170, 220), width=p(3))
    draw.line([(p(88), p(54)), (p(98), p(54))], fill=(150, 170, 220), width=p(3))
    draw.arc(box(56, 80, 108, 114), start=10, end=120, fill=INK, width=p(5))


def draw_sleepy(draw: ImageDraw.ImageDraw) -> None:
    face(draw, (255, 214, 110))
    for x in (52, 100):
        draw.arc(box(x - 12, 56, x + 12, 72), start=20, end=160, fill=INK, width=p(5))
    draw.ellipse(box(66, 96, 86, 112), fill=INK)
    big = font(p(26))
    small = font(p(18))
    draw.text((p(112), p(4)), "Z", font=big, fill=(90, 110, 200))
    draw.text((p(132), p(30)), "z", font=small, fill=(90, 110, 200))


def draw_thinking(draw: ImageDraw.ImageDraw) -> None:
    face(draw)
    dot_eyes(draw, 60)
    draw.line([(p(40), p(40)), (p(62), p(44))], fill=INK, width=p(4))
    draw.line([(p(90), p(36)), (p(112), p(34))], fill=INK, width=p(4))
    draw.line([(p(60), p(102)), (p(96), p(96))], fill=INK, width=p(5))
    draw.ellipse(box(20, 104, 56, 136), fill=YELLOW_DARK)
    draw.rounded_rectangle(box(40, 86, 52, 118), radius=p(6), fill=YELLOW_DARK)


STATIC_FACES: dict[str, Callable[[ImageDraw.ImageDraw], None]] = {
    "smile": draw_smile,
    "laugh": draw_laugh,
    "wink": draw_wink,
    "love": draw_love,
    "sad": draw_sad,
    "angry": draw_angry,
    "wow": draw_wow,
    "cool": draw_cool,
    "sleepy": draw_sleepy,
    "thinking": draw_thinking,
}


def render_static(draw_face: Callable[[ImageDraw.ImageDraw], None]) -> Image.Image:
    image, draw = canvas()
    draw_face(draw)
    return finish(image)


def bubble(draw: ImageDraw.ImageDraw, text: str, color: tuple[int, int, int],
           size: int = 40, tilt: float = 0.0, shadow: bool = True) -> None:
    """A speech bubble with a word in it (words are Latin: the built-in font has no CJK)."""
    draw.rounded_rectangle(box(10, 26, 150, 118), radius=p(28), fill=color)
    draw.polygon([(p(40), p(112)), (p(64), p(112)), (p(34), p(140))], fill=color)
    face_font = font(p(size))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face_font)
    x = p(80) - (right - left) / 2 - left
    y = p(72 + tilt) - (bottom - top) / 2 - top
    if shadow:
        draw.text((x + p(2), y + p(3)), text, font=face_font, fill=(0, 0, 0, 60))
    draw.text((x, y), text, font=face_font, fill=WHITE)


def frames_to_gif(frames: list[Image.Image], path: Path, duration: int) -> None:
    """Animated GIF: GIF has 1-bit transparency, so soft edges are matted onto the chat pane's
    light background and only nearly clear pixels become transparent."""
    matte = (244, 245, 250, 255)
    flat = []
    for frame in frames:
        card = Image.new("RGBA", frame.size, matte)
        card.alpha_composite(frame)
        rgb = card.convert("RGB").quantize(colors=127, method=Image.Quantize.MEDIANCUT)
        palette = rgb.getpalette() or []
        rgb.putpalette(palette[: 127 * 3] + [0, 0, 0] * 129)
        clear = frame.getchannel("A").point(lambda a: 255 if a < 48 else 0)
        rgb.paste(127, mask=clear)
        flat.append(rgb)
    flat[0].save(path, save_all=True, append_images=flat[1:], duration=duration, loop=0,
                 transparency=127, disposal=2, optimize=False)


def animated_heart() -> list[Image.Image]:
    frames = []
    for step in range(8):
        image, draw = canvas()
        r = 46 + 8 * math.sin(step / 8 * 2 * math.pi)
        heart(draw, 80, 84, r, RED)
        draw.ellipse(box(80 - r * 0.7, 84 - r * 0.6, 80 - r * 0.35, 84 - r * 0.3),
                     fill=(255, 255, 255, 150))
        frames.append(finish(image))
    return frames


def waving_hand() -> Image.Image:
    """A cartoon hand (palm, four fingers, thumb) on its own canvas, to be rotated."""
    image = Image.new("RGBA", (p(62), p(70)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for index, height in enumerate((26, 32, 30, 24)):
        x = 10 + index * 10
        draw.rounded_rectangle(box(x, 36 - height + 8, x + 9, 44), radius=p(4.5), fill=YELLOW,
                               outline=YELLOW_DARK, width=p(2))
    draw.rounded_rectangle(box(4, 32, 54, 46), radius=p(6), fill=YELLOW)
    draw.rounded_rectangle(box(8, 26, 52, 66), radius=p(16), fill=YELLOW, outline=YELLOW_DARK,
                           width=p(2))
    draw.rounded_rectangle(box(40, 34, 58, 46), radius=p(6), fill=YELLOW, outline=YELLOW_DARK,
                           width=p(2))
    for index in range(4):  # cover the finger outlines inside the palm
        x = 10 + index * 10
        draw.rectangle(box(x + 1.5, 28, x + 7.5, 36), fill=YELLOW)
    return image


def animated_wave() -> list[Image.Image]:
    frames = []
    hand = waving_hand()
    for step in range(6):
        image, draw = canvas()
        draw_smile(draw)
        angle = -20 + 40 * abs(math.sin(step / 6 * math.pi))
        turned = hand.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        image.alpha_composite(turned, (p(92), p(80)))
        frames.append(finish(image))
    return frames


def animated_party() -> list[Image.Image]:
    frames = []
    colors = [RED, BLUE, (90, 200, 120), (250, 180, 50), (180, 110, 230)]
    for step in range(8):
        image, draw = canvas()
        draw_laugh(draw)
        draw.polygon([(p(62), p(22)), (p(90), p(22)), (p(76), p(1))], fill=(180, 110, 230))
        draw.ellipse(box(72, -1, 80, 7), fill=(250, 180, 50))
        for index in range(14):
            x = (index * 37 + 11) % 150 + 5
            y = ((index * 53 + step * 18) % 160) - 10
            color = colors[index % len(colors)]
            draw.rectangle(box(x, y, x + 6, y + 10), fill=color)
        frames.append(finish(image))
    return frames


def animated_word(word: str, color: tuple[int, int, int]) -> list[Image.Image]:
    frames = []
    for step in range(6):
        image, draw = canvas()
        bubble(draw, word, color, tilt=-4 * abs(math.sin(step / 6 * math.pi)), shadow=False)
        frames.append(finish(image))
    return frames


def write_pack(pack_id: str, icon: str, assets: list[str]) -> None:
    info = {"id": pack_id, "icon": icon, "assets": assets}
    (DOUTU / pack_id / "info.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")


def make_faces_pack() -> str:
    folder = DOUTU / "imface"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, draw_face in STATIC_FACES.items():
        render_static(draw_face).save(folder / f"{name}.png", optimize=True)
        names.append(f"{name}.png")
    for name, frames, duration in (("wave", animated_wave(), 120),
                                   ("heart", animated_heart(), 90),
                                   ("party", animated_party(), 110)):
        frames_to_gif(frames, folder / f"{name}.gif", duration)
        names.append(f"{name}.gif")
    icon = render_static(draw_smile).resize((48, 48), Image.Resampling.LANCZOS)
    icon.save(folder / "icon.png", optimize=True)
    write_pack("imface", "icon.png", names)
    return "imface"


def make_words_pack() -> str:
    folder = DOUTU / "imword"
    folder.mkdir(parents=True, exist_ok=True)
    words = [("ok", "OK!", (70, 170, 110)), ("hi", "Hi!", (80, 140, 230)),
             ("thanks", "Thx!", (230, 120, 80)), ("yes", "Yes", (40, 150, 160)),
             ("no", "No", (200, 80, 90)), ("lol", "LOL", (240, 170, 40)),
             ("wow", "WOW", (150, 100, 220)), ("brb", "BRB", (100, 110, 130))]
    names = []
    for name, text, color in words:
        image, draw = canvas()
        bubble(draw, text, color)
        finish(image).save(folder / f"{name}.png", optimize=True)
        names.append(f"{name}.png")
    frames_to_gif(animated_word("GO!", (230, 90, 60)), folder / "go.gif", 120)
    names.append("go.gif")
    image, draw = canvas()
    bubble(draw, "Hi", (80, 140, 230), size=56)
    finish(image).resize((48, 48), Image.Resampling.LANCZOS).save(folder / "icon.png")
    write_pack("imword", "icon.png", names)
    return "imword"


AVATAR_COLORS = [((99, 132, 255), (150, 110, 250)), ((255, 140, 100), (250, 90, 130)),
                 ((60, 190, 160), (40, 140, 200)), ((250, 190, 60), (240, 120, 60)),
                 ((160, 110, 240), (230, 100, 200)), ((70, 170, 240), (60, 210, 200)),
                 ((120, 200, 90), (40, 160, 120)), ((110, 120, 150), (60, 70, 100))]


def make_avatars() -> list[str]:
    """Built-in avatars: a soft gradient with a simple figure, one per colour pair."""
    AVATARS.mkdir(parents=True, exist_ok=True)
    names = []
    for index, (top, bottom) in enumerate(AVATAR_COLORS, start=1):
        gradient = Image.new("RGBA", (BIG, BIG))
        pixels = gradient.load()
        assert pixels is not None
        for y in range(BIG):
            for x in range(BIG):
                t = (x + y) / (2 * BIG)
                pixels[x, y] = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom,
                                                                          strict=True)) + (255,)
        draw = ImageDraw.Draw(gradient)
        glow = (255, 255, 255, 235)
        if index % 2:  # a person
            draw.ellipse(box(52, 30, 108, 86), fill=glow)
            draw.ellipse(box(26, 94, 134, 200), fill=glow)
        else:  # a friendly face
            draw.ellipse(box(34, 34, 126, 126), fill=glow)
            draw.ellipse(box(60, 64, 70, 78), fill=top)
            draw.ellipse(box(90, 64, 100, 78), fill=top)
            draw.arc(box(60, 74, 100, 106), start=20, end=160, fill=top, width=p(5))
        mask = Image.new("L", (BIG, BIG), 0)
        ImageDraw.Draw(mask).ellipse((0, 0, BIG - 1, BIG - 1), fill=255)
        gradient.putalpha(mask)
        image = gradient.resize((128, 128), Image.Resampling.LANCZOS)
        name = f"a{index}.png"
        image.save(AVATARS / name, optimize=True)
        names.append(name)
    return names


def main() -> None:
    packs = [make_faces_pack(), make_words_pack()]
    (DOUTU / "index.json").write_text(json.dumps({"pkgids": packs}, indent=2) + "\n", "utf-8")
    avatars = make_avatars()
    (AVATARS / "index.json").write_text(json.dumps({"avatars": avatars}, indent=2) + "\n",
                                        "utf-8")


if __name__ == "__main__":
    main()
