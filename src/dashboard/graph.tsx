/** A live line chart (uPlot) over a session's per-second samples; redraws with setData. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { bytes } from './api.js';

export interface Series {
  label: string;
  key: 'readIops' | 'writeIops' | 'readBps' | 'writeBps' | 'readLatency' | 'writeLatency' | 'overlay';
  stroke: string;
}

export function Graph({ title, history, series, unit }: { title: string; history: Array<Record<string, number | null>>; series: Series[]; unit?: 'bytes' }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // A missing value (latency of a second without requests) is a gap, not a zero.
  const data = (): uPlot.AlignedData => [history.map((h) => h.t!), ...series.map((s) => history.map((h) => h[s.key] ?? null))];
  useEffect(() => {
    const el = box.current!;
    const fmt = (_u: uPlot, v: number): string => (unit === 'bytes' ? bytes(v) : String(v));
    plot.current = new uPlot(
      {
        width: Math.max(240, el.clientWidth),
        height: 160,
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, value: fmt }))],
        axes: [{}, { size: 70, values: (u, vals) => vals.map((v) => fmt(u, v)) }],
        legend: { live: false },
      },
      data(),
      el,
    );
    const ro = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(240, el.clientWidth), height: 160 }));
    ro.observe(el);
    return () => (ro.disconnect(), plot.current?.destroy());
  }, []);
  useEffect(() => {
    plot.current?.setData(data());
  });
  const last = history.at(-1);
  return (
    <figure class="graph">
      <figcaption>
        {title}
        <span class="sr-only">
          : latest {series.map((s) => `${s.label} ${last && last[s.key] !== null ? (unit === 'bytes' ? bytes(last[s.key]) : last[s.key]) : 'none'}`).join(', ')}
        </span>
      </figcaption>
      <div ref={box} aria-hidden="true" />
    </figure>
  );
}
