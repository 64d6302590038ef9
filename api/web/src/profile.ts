// A master's profile: equity curve with trades marked, drawdown, monthly returns, followers'
// outcomes, AUM, fee terms and any scheduled change, suspension state.
import type { IChartApi } from "lightweight-charts";
import { get, type Metrics, type Profile, type TradePage, type VaultState } from "./api";
import { deployment } from "./chain";
import { drawdownChart, equityChart } from "./charts";
import { bps, cls, date, esc, pct, short, signedUsd, usd } from "./format";
import { watch } from "./live";
import { errorBox, view, type Cleanup } from "./ui";

export function profile(master: string): Cleanup {
  const root = view();
  root.innerHTML = `<p class="muted">Loading the master…</p>`;
  let charts: IChartApi[] = [];
  let window_ = "30d";
  const render = async () => {
    try {
      const [p, trades, vault, dep] = await Promise.all([
        get<Profile>(`/v1/masters/${master}`),
        get<TradePage>(`/v1/masters/${master}/trades`, { limit: 200 }),
        null as VaultState | null,
        deployment(),
      ]);
      const state = vault ?? (await get<VaultState>(`/v1/vaults/${p.vault}`));
      const m = p.metrics.find((x) => x.window === window_) ?? p.metrics[0];
      const suspended = state.suspension?.suspended;
      const f = p.fees;
      const followersPnl = p.followers.reduce((s, x) => s + BigInt(x.pnl_usd), 0n);
      charts.forEach((c) => c.remove());
      root.innerHTML = `
        <div class="row" style="justify-content:space-between">
          <h1 data-test="profile-title">Master ${short(p.master)}</h1>
          <a class="button" href="#/copy/${p.master}" data-test="copy">Copy this master</a>
        </div>
        <p class="muted">Vault ${esc(p.vault)} · data final at block ${p.block}
          ${suspended ? '<span class="chip bad" data-test="suspended">copying suspended</span>' : '<span class="chip good">copying active</span>'}</p>
        <div class="card grid">
          ${stat("AUM", usd(p.aum.total_usd))}
          ${stat("Master's own", usd(p.aum.master_usd))}
          ${stat("Followers' pool", usd(p.aum.pool_usd))}
          ${stat("Followers", `${p.followers_now} now · ${p.followers_ever} ever`)}
          ${stat("Followers' P&L", `<span class="${cls(followersPnl)}">${signedUsd(followersPnl)}</span>`)}
          ${stat("Performance fee", `${f.fee_bps === null ? "10% (the default)" : bps(f.fee_bps)}${f.scheduled_fee_bps !== null ? ` <span class="chip" data-test="fee-change">→ ${bps(f.scheduled_fee_bps)} from ${date(f.scheduled_at ?? 0)}</span>` : ""}`)}
        </div>
        <div class="card">
          <div class="row" role="group" aria-label="Window">${p.metrics.map((x) => `<button class="ghost${x.window === m?.window ? " on" : ""}" data-w="${x.window}">${x.window === "all" ? "All time" : x.window}</button>`).join("")}</div>
          ${m ? metricsGrid(m) : '<p class="muted">No metrics yet.</p>'}
        </div>
        <div class="card"><h2>Equity (performance index) · trades marked</h2><div class="chart" id="equity" data-test="equity-chart"></div></div>
        <div class="card"><h2>Drawdown</h2><div class="chart small" id="drawdown" data-test="drawdown-chart"></div></div>
        <div class="card"><h2>Monthly returns</h2><div class="months" data-test="months">
          ${p.monthly_returns.map((r) => `<div><div class="muted">${r.month}</div><b class="${cls(r.roi)}">${pct(r.roi)}</b></div>`).join("") || '<span class="muted">No full month yet.</span>'}
        </div></div>
        <div class="card scroll"><h2>What followers got</h2>
          ${p.followers.length ? `<table><thead><tr><th>Follower</th><th>Invested</th><th>Value now</th><th>Withdrawn</th><th>Fees</th><th>P&L</th><th>Joined</th></tr></thead><tbody>
          ${p.followers.map((x) => `<tr><td>${short(x.follower)}${x.left_at ? ' <span class="chip">left</span>' : ""}</td><td>${usd(x.invested_usd)}</td><td>${usd(x.current_value_usd)}</td><td>${usd(x.withdrawn_usd)}</td><td>${usd(x.fees_paid_usd)}</td><td class="${cls(x.pnl_usd)}">${signedUsd(x.pnl_usd)}</td><td>${date(x.joined_at)}</td></tr>`).join("")}
          </tbody></table>` : '<p class="muted">No follower yet.</p>'}
        </div>
        <div class="card scroll"><h2>Recent trades</h2>
          ${trades.items.length ? `<table><thead><tr><th>When</th><th>Trade</th><th>Master</th><th>Pool</th></tr></thead><tbody>
          ${trades.items.slice(0, 20).map((t) => {
            const i = dep.tokens.get(t.token_in.toLowerCase());
            const o = dep.tokens.get(t.token_out.toLowerCase());
            return `<tr><td>${date(t.timestamp)}</td><td>${i?.symbol ?? short(t.token_in)} → ${o?.symbol ?? short(t.token_out)}</td><td>${fmt(t.master_in, i?.decimals)} → ${fmt(t.master_out, o?.decimals)}</td><td>${fmt(t.pool_in, i?.decimals)} → ${fmt(t.pool_out, o?.decimals)}</td></tr>`;
          }).join("")}</tbody></table>` : '<p class="muted">No trade yet.</p>'}
        </div>`;
      root.querySelectorAll<HTMLButtonElement>("[data-w]").forEach((b) =>
        b.addEventListener("click", () => {
          window_ = b.dataset.w as string;
          render();
        }),
      );
      charts = [
        equityChart(root.querySelector("#equity") as HTMLElement, p.equity_curve, trades.items, dep.base.address),
        drawdownChart(root.querySelector("#drawdown") as HTMLElement, p.equity_curve),
      ];
    } catch (e) {
      root.innerHTML = errorBox(e);
    }
  };
  render();
  const unwatch = watch([`master:${master}`], render);
  return () => {
    unwatch();
    charts.forEach((c) => c.remove());
  };
}

function fmt(units: string, decimals = 18): string {
  const n = Number(units) / 10 ** decimals;
  return n.toLocaleString("en-US", { maximumFractionDigits: n >= 100 ? 2 : 5 });
}

const stat = (k: string, v: string) => `<div class="stat"><div class="k">${k}</div><div class="v">${v}</div></div>`;

function metricsGrid(m: Metrics): string {
  return `<div class="grid" style="margin-top:10px" data-test="metrics">
    ${stat("ROI", `<span class="${cls(m.roi)}">${pct(m.roi)}</span>`)}
    ${stat("Max drawdown", `<span class="bad">${pct(-m.max_drawdown)}</span>`)}
    ${stat("Risk score", `${m.risk_score ?? "–"}/10`)}
    ${stat("Sharpe", m.sharpe === null ? "–" : m.sharpe.toFixed(2))}
    ${stat("Win rate", pct(m.win_rate, 0))}
    ${stat("Trades", String(m.trades))}
    ${stat("Followers in profit", `${m.followers_in_profit}/${m.followers_ever}`)}
    ${stat("Days of history", String(m.history_days))}
  </div>`;
}
