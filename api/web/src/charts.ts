// Lightweight Charts (v5 API): the master's equity curve with trades marked on it, and the
// drawdown below it.
import {
  AreaSeries,
  createChart,
  createSeriesMarkers,
  LineSeries,
  type IChartApi,
  type SeriesMarker,
  type Time,
  type UTCTimestamp,
} from "lightweight-charts";
import type { CurvePoint, Trade } from "./api";
import { toNumber } from "./format";

function colors() {
  const css = getComputedStyle(document.documentElement);
  const v = (name: string) => css.getPropertyValue(name).trim();
  return { fg: v("--fg"), muted: v("--muted"), line: v("--line"), accent: v("--accent"), bad: v("--bad"), good: v("--good"), card: v("--card") };
}

function base(el: HTMLElement): IChartApi {
  const c = colors();
  return createChart(el, {
    autoSize: true,
    layout: { background: { color: c.card }, textColor: c.muted, attributionLogo: false },
    grid: { vertLines: { color: c.line }, horzLines: { color: c.line } },
    rightPriceScale: { borderColor: c.line },
    timeScale: { borderColor: c.line, timeVisible: true },
  });
}

/** One point per second (the last of a block time wins): the charts' times must increase. */
function byTime(points: CurvePoint[]): CurvePoint[] {
  const out = new Map<number, CurvePoint>();
  for (const p of points) if (p.master_index !== null) out.set(p.timestamp, p);
  return [...out.values()].sort((a, b) => a.timestamp - b.timestamp);
}

export function equityChart(el: HTMLElement, curve: CurvePoint[], trades: Trade[], base0: string): IChartApi {
  const c = colors();
  const chart = base(el);
  const points = byTime(curve);
  const series = chart.addSeries(LineSeries, { color: c.accent, lineWidth: 2, priceFormat: { type: "price", precision: 4, minMove: 0.0001 } });
  series.setData(points.map((p) => ({ time: p.timestamp as UTCTimestamp, value: toNumber(p.master_index) })));
  const times = points.map((p) => p.timestamp);
  const markers: SeriesMarker<Time>[] = [];
  for (const t of [...trades].sort((a, b) => a.timestamp - b.timestamp)) {
    const at = times.find((x) => x >= t.timestamp) ?? times[times.length - 1];
    if (at === undefined) continue;
    const buy = t.token_in.toLowerCase() === base0.toLowerCase();
    markers.push({
      time: at as UTCTimestamp,
      position: buy ? "belowBar" : "aboveBar",
      color: buy ? c.good : c.bad,
      shape: buy ? "arrowUp" : "arrowDown",
      text: buy ? "B" : "S",
    });
  }
  markers.sort((a, b) => Number(a.time) - Number(b.time));
  createSeriesMarkers(series, markers);
  chart.timeScale().fitContent();
  return chart;
}

export function drawdownChart(el: HTMLElement, curve: CurvePoint[]): IChartApi {
  const c = colors();
  const chart = base(el);
  const series = chart.addSeries(AreaSeries, {
    lineColor: c.bad, topColor: "rgba(200,50,43,0.05)", bottomColor: "rgba(200,50,43,0.35)", lineWidth: 1,
    invertFilledArea: true,
    priceFormat: { type: "percent", precision: 1, minMove: 0.1 },
  });
  series.setData(byTime(curve).map((p) => ({ time: p.timestamp as UTCTimestamp, value: -100 * (p.drawdown ?? 0) })));
  chart.timeScale().fitContent();
  return chart;
}
