"""Text layers and captions -> one ASS subtitle file (pysubs2), drawn by ffmpeg's libass in the render.

The script's PlayRes is the output size, so every size is in output pixels. Caption bands (a dark
vertical gradient behind the text) are ASS vector drawings in thin strips of rising opacity, so the band
appears and fades exactly with its caption. Fonts come from the `font-roboto` package (fontsdir).
"""

from __future__ import annotations

from pathlib import Path

import pysubs2

from source.compose.timeline import TextStyle, Timeline

_BAND_STRIPS = 24
_ALIGN = {"bottom": 2, "top": 8, "center": 5}


def fonts_dir() -> Path:
    """The folder of the packaged Roboto TTFs (handed to libass as fontsdir)."""
    import font_roboto

    return Path(font_roboto.font_directory)


def _colour(hex_colour: str) -> pysubs2.Color:
    h = hex_colour.lstrip("#")
    alpha = int(h[6:8], 16) if len(h) == 8 else 255  # ours: 255 opaque; ASS: 0 opaque
    return pysubs2.Color(int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255 - alpha)


def _style(style: TextStyle) -> pysubs2.SSAStyle:
    return pysubs2.SSAStyle(
        fontname=style.font, fontsize=style.size, bold=style.bold,
        primarycolor=_colour(style.colour), secondarycolor=_colour(style.colour),
        outlinecolor=_colour(style.box_colour if style.box else style.outline_colour),
        backcolor=_colour(style.shadow_colour),
        outline=style.outline if not style.box else max(style.outline, 8), shadow=style.shadow,
        borderstyle=3 if style.box else 1, alignment=pysubs2.Alignment(_ALIGN[style.position]),
        marginl=style.margin, marginr=style.margin, marginv=style.margin,
    )


def escape_text(text: str) -> str:
    """User text as literal ASS: no override blocks, no escape sequences; newlines become line breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\\", "\\\u2060").replace("{", "\\{").replace("}", "\\}")
    return text.replace("\n", "\\N")


def _fad(fade_in: float, fade_out: float) -> str:
    if fade_in <= 0 and fade_out <= 0:
        return ""
    return f"\\fad({int(round(fade_in * 1000))},{int(round(fade_out * 1000))})"


def _braced(overrides: str) -> str:
    return f"{{{overrides}}}" if overrides else ""


def _band_events(tl: Timeline, style: TextStyle, start: float, end: float, fade: float) -> list[pysubs2.SSAEvent]:
    """A gradient from transparent to `band_opacity` black toward the frame edge the text sits at."""
    w, h = tl.width, tl.height
    band_h = max(2, int(round(style.band_height * h)))
    strip = max(1, -(-band_h // _BAND_STRIPS))
    events = []
    for i in range(_BAND_STRIPS):
        y0 = i * strip
        if y0 >= band_h:
            break
        frac = (i + 0.5) / _BAND_STRIPS  # 0 at the inner edge, 1 at the frame edge
        if style.position == "top":
            top = band_h - y0 - strip
        elif style.position == "bottom":
            top = h - band_h + y0
        else:
            top = (h - band_h) // 2 + y0
            frac = 1.0
        opacity = style.band_opacity * (frac if style.position != "center" else 1.0)
        ass_alpha = 255 - int(round(255 * opacity))
        drawing = (f"{{\\an7\\pos(0,{top})\\p1\\bord0\\shad0\\1c&H000000&\\1a&H{ass_alpha:02X}&"
                   f"{_fad(fade, fade)}}}m 0 0 l {w} 0 {w} {strip} 0 {strip}{{\\p0}}")
        events.append(pysubs2.SSAEvent(start=int(round(start * 1000)), end=int(round(end * 1000)),
                                       text=drawing, style="Band", layer=0))
    return events


def build_ass(tl: Timeline) -> pysubs2.SSAFile | None:
    """The ASS script for every text layer and caption of the timeline, or None when there is none."""
    if not tl.texts and not tl.captions:
        return None
    subs = pysubs2.SSAFile()
    subs.info["PlayResX"] = str(tl.width)
    subs.info["PlayResY"] = str(tl.height)
    subs.info["WrapStyle"] = "0"
    subs.info["ScaledBorderAndShadow"] = "yes"
    subs.styles["Band"] = pysubs2.SSAStyle(outline=0, shadow=0, alignment=pysubs2.Alignment(7))
    subs.styles["Caption"] = _style(tl.caption_style)
    for cap in tl.captions:
        fade = min(tl.caption_fade, (cap.end - cap.start) / 3)
        if tl.caption_style.band:
            subs.events.extend(_band_events(tl, tl.caption_style, cap.start, cap.end, fade))
        subs.events.append(pysubs2.SSAEvent(start=int(round(cap.start * 1000)), end=int(round(cap.end * 1000)),
                                            text=_braced(_fad(fade, fade)) + escape_text(cap.text), style="Caption",
                                            layer=1))
    for i, layer in enumerate(tl.texts):
        name = f"Text{i}"
        subs.styles[name] = _style(layer.style)
        end = layer.start + layer.duration
        if layer.style.band:
            subs.events.extend(_band_events(tl, layer.style, layer.start, end, layer.fade_in))
        pos = ""
        if layer.x is not None or layer.y is not None:
            x = (0.5 if layer.x is None else layer.x) * tl.width
            y = (0.5 if layer.y is None else layer.y) * tl.height
            pos = f"\\an5\\pos({int(round(x))},{int(round(y))})"
        overrides = pos + _fad(layer.fade_in, layer.fade_out)
        subs.events.append(pysubs2.SSAEvent(start=int(round(layer.start * 1000)), end=int(round(end * 1000)),
                                            text=_braced(overrides) + escape_text(layer.text),
                                            style=name, layer=2))
    return subs
