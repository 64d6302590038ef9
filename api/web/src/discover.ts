// Discover: the rankings, sortable by return and by risk, drawdown and risk score shown as
// plainly as returns, with what the master's followers got.
import { get, type MasterPage } from "./api";
import { cls, esc, pct, short, usd } from "./format";
import { errorBox, view, type Cleanup } from "./ui";

const SORTS: [string, string][] = [
  ["roi", "ROI"],
  ["max_drawdown", "Max drawdown"],
  ["sharpe", "Sharpe"],
  ["followers_now", "Followers"],
  ["risk_score", "Risk score"],
];
const WINDOWS = ["7d", "30d", "90d", "all"];
const state = { sort: "roi", window: "30d", maxDrawdown: "", maxRisk: "", minDays: "", all: false };

export function discover(): Cleanup {
  const root = view();
  root.innerHTML = `
    <h1>Find a master to copy</h1>
    <div class="card">
      <div class="row" role="group" aria-label="Window">
        ${WINDOWS.map((w) => `<button class="ghost${w === state.window ? " on" : ""}" data-window="${w}" aria-pressed="${w === state.window}">${w === "all" ? "All time" : w}</button>`).join("")}
      </div>
      <div class="row" style="margin-top:8px">
        <label>Sort by <select id="sort">${SORTS.map(([k, t]) => `<option value="${k}"${k === state.sort ? " selected" : ""}>${t}</option>`).join("")}</select></label>
        <label>Max drawdown % <input id="maxdd" inputmode="decimal" size="4" value="${esc(state.maxDrawdown)}"></label>
        <label>Max risk score <input id="maxrisk" inputmode="numeric" size="3" value="${esc(state.maxRisk)}"></label>
        <label>Min days <input id="mindays" inputmode="numeric" size="3" value="${esc(state.minDays)}"></label>
        <label><input type="checkbox" id="all"${state.all ? " checked" : ""}> include unranked</label>
      </div>
    </div>
    <div id="list" class="card scroll"><p class="muted">Loading…</p></div>`;
  const list = root.querySelector("#list") as HTMLElement;
  const load = async () => {
    try {
      const page = await get<MasterPage>("/v1/masters", {
        sort: state.sort,
        window: state.window,
        limit: 50,
        ranked_only: !state.all,
        max_drawdown: state.maxDrawdown ? Number(state.maxDrawdown) / 100 : undefined,
        max_risk_score: state.maxRisk || undefined,
        min_days: state.minDays || undefined,
      });
      list.innerHTML = page.items.length
        ? `<table data-test="rankings"><thead><tr>
            <th>Master</th><th>ROI</th><th>Max drawdown</th><th>Risk</th><th>Sharpe</th>
            <th>Followers</th><th>Followers' median</th><th>AUM</th><th>Trades</th></tr></thead><tbody>
            ${page.items.map((m) => `<tr>
              <td><a href="#/m/${m.master}" data-test="master-link">${short(m.master)}</a>${m.ranked ? "" : ' <span class="chip">unranked</span>'}${m.closed ? ' <span class="chip bad">closed</span>' : ""}</td>
              <td class="${cls(m.roi)}">${pct(m.roi)}</td>
              <td class="bad">${pct(-m.max_drawdown)}</td>
              <td><span class="chip${(m.risk_score ?? 0) >= 7 ? " bad" : ""}">${m.risk_score ?? "–"}/10</span></td>
              <td>${m.sharpe === null ? "–" : m.sharpe.toFixed(2)}</td>
              <td>${m.followers_now} <span class="muted">(${m.followers_in_profit} in profit)</span></td>
              <td class="${cls(m.follower_median_return)}">${pct(m.follower_median_return)}</td>
              <td>${usd(m.aum_usd)}</td><td>${m.trades}</td></tr>`).join("")}
            </tbody></table>`
        : `<p class="muted">No master matches. ${state.all ? "" : "Masters need a track record to be ranked: tick “include unranked” to see them all."}</p>`;
    } catch (e) {
      list.innerHTML = errorBox(e);
    }
  };
  root.querySelectorAll<HTMLButtonElement>("[data-window]").forEach((b) =>
    b.addEventListener("click", () => {
      state.window = b.dataset.window as string;
      discover();
    }),
  );
  const bind = (id: string, key: keyof typeof state) =>
    root.querySelector(id)?.addEventListener("change", (e) => {
      const t = e.target as HTMLInputElement;
      (state as Record<string, unknown>)[key] = t.type === "checkbox" ? t.checked : t.value;
      load();
    });
  bind("#sort", "sort");
  bind("#maxdd", "maxDrawdown");
  bind("#maxrisk", "maxRisk");
  bind("#mindays", "minDays");
  bind("#all", "all");
  load();
  return () => {};
}
