/** A small dependency-free SVG bar chart (CSP-safe: no inline styles, colours come from the stylesheet). */
import { svg } from './dom.ts';

export interface BarDatum {
  label: string;
  value: number;
}

const WIDTH = 1000;
const HEIGHT = 240;
const PAD = { top: 10, right: 10, bottom: 24, left: 44 };

export function barChart(
  data: BarDatum[],
  options: { title: string; format: (v: number) => string },
): SVGElement {
  const max = Math.max(0, ...data.map((d) => d.value));
  const top = max > 0 ? niceCeil(max) : 1;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const step = data.length > 0 ? plotW / data.length : plotW;
  const barW = Math.max(1, step * 0.7);
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: 'chart',
    role: 'img',
    'aria-label': options.title,
  });
  for (const frac of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - frac);
    root.append(svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: 'grid' }));
    const label = svg('text', { x: PAD.left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' });
    label.textContent = options.format(top * frac);
    root.append(label);
  }
  const labelEvery = Math.max(1, Math.ceil(data.length / 10));
  data.forEach((d, i) => {
    const barH = (d.value / top) * plotH;
    const x = PAD.left + i * step + (step - barW) / 2;
    const bar = svg('rect', {
      x,
      y: PAD.top + plotH - barH,
      width: barW,
      height: Math.max(0, barH),
      class: 'bar',
    });
    const tip = svg('title', {});
    tip.textContent = `${d.label}: ${options.format(d.value)}`;
    bar.append(tip);
    root.append(bar);
    if (i % labelEvery === 0) {
      const text = svg('text', { x: x + barW / 2, y: HEIGHT - 6, class: 'axis', 'text-anchor': 'middle' });
      text.textContent = d.label.slice(5); // MM-DD
      root.append(text);
    }
  });
  return root;
}

/** Round up to 1, 2 or 5 × 10^n so axis labels are readable. */
export function niceCeil(value: number): number {
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (value <= m * exp) return m * exp;
  return 10 * exp;
}
