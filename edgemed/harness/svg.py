"""Tiny hand-written inline SVG charts for the self-contained bench report (no plotting library)."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
W, H, PAD = 560, 320, 56


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


class Axes:
    """Maps data coordinates to a W x H canvas with margins; collects SVG elements."""

    def __init__(self, xlim, ylim, xlabel: str, ylabel: str, w: int = W, h: int = H, logx=False):
        self.w, self.h, self.logx = w, h, logx
        self.x0, self.x1 = (math.log10(v) for v in xlim) if logx else xlim
        self.y0, self.y1 = ylim
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0
        self.parts: list[str] = []
        self._frame(xlabel, ylabel)

    def px(self, x: float) -> float:
        v = math.log10(max(x, 1e-12)) if self.logx else x
        return PAD + (v - self.x0) / (self.x1 - self.x0) * (self.w - PAD - 16)

    def py(self, y: float) -> float:
        return self.h - PAD + 16 - (y - self.y0) / (self.y1 - self.y0) * (self.h - PAD - 8)

    def _frame(self, xlabel: str, ylabel: str) -> None:
        left, right = PAD, self.w - 16
        top, bottom = 8, self.h - PAD + 16
        self.parts.append(
            f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
            'fill="none" stroke="#888"/>'
        )
        xt = _log_ticks(self.x0, self.x1) if self.logx else _ticks(self.x0, self.x1)
        for v in xt:
            x = self.px(v)
            self.parts.append(
                f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#888"/>'
            )
            self.text(x, bottom + 16, _fmt(v, xt), anchor="middle")
        yt = _ticks(self.y0, self.y1)
        for v in yt:
            y = self.py(v)
            self.parts.append(
                f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#888"/>'
            )
            self.text(left - 6, y + 4, _fmt(v, yt), anchor="end")
        self.text((left + right) / 2, self.h - 8, xlabel, anchor="middle")
        self.parts.append(
            f'<text x="14" y="{(top + bottom) / 2:.1f}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 14 {(top + bottom) / 2:.1f})">{escape(ylabel)}</text>'
        )

    def text(self, x: float, y: float, s: str, anchor: str = "start", size: int = 11, fill="#222"):
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}">{escape(s)}</text>'
        )

    def line(self, pts, stroke="#333", width=1.5, dash: str | None = None) -> None:
        d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline points="{d}" fill="none" stroke="{stroke}" stroke-width="{width}"{extra}/>'
        )

    def dot(self, x: float, y: float, fill: str, r: float = 4.5, title: str = "") -> None:
        tip = f"<title>{escape(title)}</title>" if title else ""
        self.parts.append(
            f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="{r}" fill="{fill}">{tip}</circle>'
        )

    def rect(self, x0, y0, x1, y1, fill: str, opacity: float = 0.5) -> None:
        a, b = sorted((self.px(x0), self.px(x1)))
        c, d = sorted((self.py(y0), self.py(y1)))
        self.parts.append(
            f'<rect x="{a:.1f}" y="{c:.1f}" width="{max(b - a, 0.5):.1f}" height="{max(d - c, 0.5):.1f}" '
            f'fill="{fill}" fill-opacity="{opacity}" stroke="{fill}"/>'
        )

    def legend(self, items: list[tuple[str, str]]) -> None:
        """Colored swatches with names, top-left inside the frame."""
        for i, (name, fill) in enumerate(items):
            y = 24 + 14 * i
            self.parts.append(
                f'<rect x="{PAD + 8}" y="{y - 8}" width="12" height="4" fill="{fill}"/>'
            )
            self.text(PAD + 24, y - 2, name, size=10)

    def svg(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" font-family="sans-serif">'
            + "".join(self.parts)
            + "</svg>"
        )


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n)) if span > 0 else 1.0
    for m in (1, 2, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _log_ticks(lo_exp: float, hi_exp: float) -> list[float]:
    """1-2-5 ticks between 10**lo_exp and 10**hi_exp (fewer when the range spans many decades)."""
    mults = (1, 2, 5) if hi_exp - lo_exp < 2.5 else (1,)
    out = []
    for e in range(math.floor(lo_exp), math.ceil(hi_exp) + 1):
        out += [m * 10.0**e for m in mults if lo_exp <= math.log10(m * 10.0**e) <= hi_exp]
    return out


def _fmt(v: float, ticks: list[float]) -> str:
    """Enough decimals to tell neighbouring ticks apart."""
    step = min((b - a for a, b in zip(ticks[:-1], ticks[1:], strict=True)), default=abs(v) or 1.0)
    decimals = max(0, -math.floor(math.log10(min(step, abs(v) or step))) if step > 0 else 0)
    return f"{v:.{min(decimals, 6)}f}"


def padded(lo: float, hi: float, frac: float = 0.08) -> tuple[float, float]:
    span = (hi - lo) or max(abs(hi), 1e-3)
    return lo - frac * span, hi + frac * span
