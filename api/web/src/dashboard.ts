// The follower's dashboard, live: value and P&L per master and in total, the pool's positions,
// each limit and its distance, fees paid, the masters' latest trades, notifications; exit in kind
// or to the base asset with a preview of what arrives.
import type { Address } from "viem";
import { ApiError, get, type Follower, type Notification, type Position, type TradePage } from "./api";
import { deployment, erc20Abi, token, type Deployment } from "./chain";
import { amount, bps, cls, date, esc, short, signedUsd, usd } from "./format";
import { watch } from "./live";
import { busy, errorBox, view, type Cleanup } from "./ui";
import { connected, onWalletChange, read, send, signedIn, signIn, simulate } from "./wallet";

interface Held { token: string; amount: bigint; }
interface Live { shares: bigint; held: Held[]; }

export function dashboard(): Cleanup {
  const root = view();
  let unwatch: () => void = () => {};
  let openExit: string | null = null;
  let lastNote = 0;
  let watching = "";

  const shell = () => {
    const w = connected();
    if (!w) {
      root.innerHTML = `<h1>Dashboard</h1><div class="card">Connect a wallet (top right) to see your positions.</div>`;
      return false;
    }
    root.innerHTML = `<h1>Dashboard <span class="muted" style="font-size:14px">${short(w.address)}</span></h1>
      <div id="summary" class="card grid" data-test="summary"><p class="muted">Loading…</p></div>
      <div id="notice"></div>
      <div id="positions"></div>
      <div class="card scroll"><h2>Latest trades of your masters</h2><div id="trades" data-test="trades"><p class="muted">–</p></div></div>
      <div class="card"><h2>Notifications</h2><div id="notes" data-test="notifications"></div></div>`;
    return true;
  };

  const refresh = async () => {
    const w = connected();
    if (!w || !root.querySelector("#summary")) return;
    const dep = await deployment();
    let follower: Follower | null = null;
    try {
      follower = await get<Follower>(`/v1/followers/${w.address}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) {
        (root.querySelector("#summary") as HTMLElement).innerHTML = errorBox(e);
        return;
      }
    }
    let free = 0n;
    let wallet = 0n;
    try {
      [free, wallet] = await Promise.all([
        read<{ free: bigint }>({ address: dep.hub, abi: dep.hubAbi, functionName: "account", args: [w.address] }).then((a) => a.free),
        read<bigint>({ address: dep.base.address, abi: erc20Abi, functionName: "balanceOf", args: [w.address] }),
      ]);
    } catch {
      /* a wallet on another network: the banner says so */
    }
    const positions = (follower?.positions ?? []).filter((p) => BigInt(p.shares) > 0n);
    const live = await Promise.all(positions.map((p) => holdings(dep, p.vault as Address, w.address).catch(() => null)));
    const total = positions.reduce((s, p) => s + BigInt(p.current_value_usd), 0n);
    const pnl = positions.reduce((s, p) => s + BigInt(p.unrealised_pnl_usd) + BigInt(p.realised_pnl_usd), 0n);
    const fees = BigInt(follower?.fees_paid_usd ?? "0");
    const sym = dep.base.symbol;
    (root.querySelector("#summary") as HTMLElement).innerHTML = `
      ${stat("Value in masters", usd(total), "total-value")}
      ${stat("P&L", `<span class="${cls(pnl)}">${signedUsd(pnl)}</span>`, "total-pnl")}
      ${stat("Fees paid", usd(fees))}
      ${stat(`Free in Tandem`, `${amount(free, dep.base.decimals, 2)} ${sym}`, "free")}
      ${stat("In your wallet", `${amount(wallet, dep.base.decimals, 2)} ${sym}`)}
      <div class="stat"><div class="k">Move</div><div class="row"><button class="ghost" id="withdraw" data-test="withdraw"${free > 0n ? "" : " disabled"}>Withdraw free ${sym}</button></div><div id="wmsg"></div></div>`;
    root.querySelector("#withdraw")?.addEventListener("click", (e) =>
      busy(e.target as HTMLButtonElement, root.querySelector("#wmsg"), async () => {
        await send({ address: dep.hub, abi: dep.hubAbi, functionName: "withdraw", args: [free] });
        refresh();
      }),
    );
    if (openExit === null) {
      (root.querySelector("#positions") as HTMLElement).innerHTML = positions.length
        ? positions.map((p, i) => positionCard(dep, p, live[i])).join("")
        : `<div class="card" data-test="no-positions">No position yet. <a href="#/">Find a master to copy</a>.</div>`;
      root.querySelectorAll<HTMLButtonElement>("[data-exit]").forEach((b) =>
        b.addEventListener("click", () => exitPanel(dep, b.dataset.vault as Address, b.dataset.exit as "kind" | "base")),
      );
    }
    await renderTrades(dep, positions);
    await renderNotes(dep);
    // Follow what is shown: the follower's own events and every vault they are in.
    const topics = [`follower:${w.address}`, ...positions.map((p) => `vault:${p.vault}`)];
    if (topics.join() !== watching) {
      unwatch();
      watching = topics.join();
      unwatch = watch(topics, refresh);
    }
  };

  const renderTrades = async (dep: Deployment, positions: Position[]) => {
    const el = root.querySelector("#trades") as HTMLElement;
    if (!positions.length) {
      el.innerHTML = '<p class="muted">–</p>';
      return;
    }
    const pages = await Promise.all(positions.map((p) => get<TradePage>(`/v1/masters/${p.master}/trades`, { order: "desc", limit: 5 }).catch(() => null)));
    const rows = pages.flatMap((page, i) => (page?.items ?? []).map((t) => ({ t, master: positions[i].master })));
    rows.sort((a, b) => b.t.block_number - a.t.block_number || b.t.log_index - a.t.log_index);
    el.innerHTML = `<table><thead><tr><th>When</th><th>Master</th><th>Trade</th><th>Pool's part</th></tr></thead><tbody>
      ${rows.slice(0, 10).map(({ t, master }) => {
        const i = token(dep, t.token_in);
        const o = token(dep, t.token_out);
        return `<tr data-test="trade" data-tx="${t.tx_hash}"><td>${date(t.timestamp)}</td><td>${short(master)}</td><td>${i.symbol} → ${o.symbol}</td><td>${amount(t.pool_in, i.decimals)} ${i.symbol} → ${amount(t.pool_out, o.decimals)} ${o.symbol}</td></tr>`;
      }).join("")}</tbody></table>`;
  };

  const renderNotes = async (dep: Deployment) => {
    const el = root.querySelector("#notes") as HTMLElement;
    if (!signedIn()) {
      el.innerHTML = `<p class="muted">Sign in with your wallet to see your notifications.</p><button class="ghost" id="siwe" data-test="sign-in-notes">Sign in</button><div id="smsg"></div>`;
      el.querySelector("#siwe")?.addEventListener("click", (e) => busy(e.target as HTMLButtonElement, el.querySelector("#smsg"), async () => {
        await signIn();
        refresh();
      }));
      return;
    }
    try {
      const page = await get<{ items: Notification[] }>("/v1/account/notifications", { after: 0, limit: 500 });
      const items = page.items.slice(-30).reverse();
      lastNote = items[0]?.id ?? lastNote;
      el.innerHTML = items.length
        ? `<ul class="notes">${items.map((n) => `<li data-test="notification" data-kind="${esc(n.kind)}"><b>${esc(describe(n))}</b> <span class="muted">${date(n.block_timestamp)} · ${short(n.vault)}</span></li>`).join("")}</ul>`
        : '<p class="muted">No notification yet.</p>';
    } catch (e) {
      el.innerHTML = errorBox(e);
    }
    void dep;
  };

  const exitPanel = async (dep: Deployment, vault: Address, kind: "kind" | "base") => {
    const w = connected();
    const panel = root.querySelector(`[data-panel="${vault}"]`) as HTMLElement | null;
    if (!w || !panel) return;
    openExit = vault;
    panel.innerHTML = '<p class="muted">Working out what would arrive…</p>';
    try {
      const shares = await read<bigint>({ address: vault, abi: dep.vaultAbi, functionName: "sharesOf", args: [w.address] });
      let preview: string;
      let call: { address: Address; abi: typeof dep.vaultAbi; functionName: string; args: readonly unknown[] };
      if (kind === "kind") {
        call = { address: vault, abi: dep.vaultAbi, functionName: "exitInKind", args: [shares] };
        const [tokens, amounts] = await simulate<readonly [readonly Address[], readonly bigint[]]>(call);
        preview = tokens.map((t, i) => ({ t: token(dep, t), a: amounts[i] })).filter((x) => x.a > 0n)
          .map((x) => `${amount(x.a, x.t.decimals)} ${x.t.symbol}`).join(", ") + " to your wallet";
      } else {
        const tokens = await read<readonly Address[]>({ address: vault, abi: dep.vaultAbi, functionName: "tokens", args: [] });
        const swaps = [];
        for (const t of tokens) {
          if (t.toLowerCase() === dep.base.address.toLowerCase()) continue;
          const route = await read<{ adapter: Address; path: `0x${string}` }>({ address: dep.hub, abi: dep.hubAbi, functionName: "routeOf", args: [t, dep.base.address] });
          swaps.push({ token: t, adapter: route.adapter, route: route.path });
        }
        const out = await simulate<bigint>({ address: vault, abi: dep.vaultAbi, functionName: "exitToBase", args: [shares, swaps, 0n] });
        const min = (out * 99n) / 100n; // your own bound: at most 1% less than the preview
        call = { address: vault, abi: dep.vaultAbi, functionName: "exitToBase", args: [shares, swaps, min] };
        preview = `${amount(out, dep.base.decimals, 2)} ${dep.base.symbol} into your Tandem account (at least ${amount(min, dep.base.decimals, 2)})`;
      }
      panel.innerHTML = `<div class="ok" data-test="exit-preview">You would receive about <b>${esc(preview)}</b>, after the master's fee on your gain.</div>
        <div class="row"><button class="ghost" data-test="exit-cancel">Cancel</button><button data-test="exit-confirm">Confirm exit</button></div><div id="emsg-${vault}"></div>`;
      panel.querySelector("[data-test=exit-cancel]")?.addEventListener("click", () => {
        openExit = null;
        refresh();
      });
      panel.querySelector("[data-test=exit-confirm]")?.addEventListener("click", (e) =>
        busy(e.target as HTMLButtonElement, panel.querySelector(`#emsg-${vault}`), async () => {
          await send(call);
          (root.querySelector("#notice") as HTMLElement).innerHTML = `<div class="ok" data-test="exited">Exited. ${kind === "base" ? `The ${dep.base.symbol} is free in your Tandem account.` : "The tokens are in your wallet."}</div>`;
          openExit = null;
          window.setTimeout(refresh, 300);
        }),
      );
    } catch (e) {
      panel.innerHTML = errorBox(e) + '<button class="ghost" data-test="exit-cancel">Close</button>';
      panel.querySelector("[data-test=exit-cancel]")?.addEventListener("click", () => {
        openExit = null;
        refresh();
      });
    }
  };

  const start = () => {
    unwatch();
    watching = "";
    openExit = null;
    if (shell()) refresh();
  };
  start();
  const off = onWalletChange(start);
  return () => {
    off();
    unwatch();
  };
}

async function holdings(dep: Deployment, vault: Address, me: Address): Promise<Live> {
  const v = { address: vault, abi: dep.vaultAbi };
  const [shares, total, tokens] = await Promise.all([
    read<bigint>({ ...v, functionName: "sharesOf", args: [me] }),
    read<bigint>({ ...v, functionName: "totalShares", args: [] }),
    read<readonly Address[]>({ ...v, functionName: "tokens", args: [] }),
  ]);
  const books = await Promise.all(tokens.map((t) => read<readonly [bigint, bigint]>({ ...v, functionName: "books", args: [t] })));
  return { shares, held: tokens.map((t, i) => ({ token: t, amount: total ? (books[i][1] * shares) / total : 0n })).filter((h) => h.amount > 0n) };
}

const stat = (k: string, v: string, test = "") => `<div class="stat"${test ? ` data-test="${test}"` : ""}><div class="k">${k}</div><div class="v">${v}</div></div>`;

function distance(label: string, limit: number, d: number | null): string {
  if (!limit) return `<div>${label}: <span class="muted">off</span></div>`;
  const warn = d !== null && d < 300 ? "bad" : "";
  return `<div>${label} ${bps(limit)} · <span class="${warn}">${d === null ? "–" : `${(d / 100).toFixed(1)}% away`}</span></div>`;
}

function positionCard(dep: Deployment, p: Position, live: Live | null): string {
  const pnl = BigInt(p.unrealised_pnl_usd) + BigInt(p.realised_pnl_usd);
  const held = live?.held.map((h) => {
    const t = token(dep, h.token);
    return `<span class="chip" data-test="holding">${amount(h.amount, t.decimals)} ${t.symbol}</span>`;
  }).join(" ") ?? "";
  return `<div class="card" data-test="position" data-vault="${p.vault}">
    <div class="row" style="justify-content:space-between"><h2 style="margin:0">Copying <a href="#/m/${p.master}">${short(p.master)}</a></h2>
      <div class="row"><button class="ghost" data-exit="kind" data-vault="${p.vault}" data-test="exit-kind">Exit in kind</button>
      <button data-exit="base" data-vault="${p.vault}" data-test="exit-base">Exit to ${dep.base.symbol}</button></div></div>
    <div class="grid" style="margin-top:8px">
      <div class="stat"><div class="k">Value</div><div class="v" data-test="value">${usd(p.current_value_usd)}</div></div>
      <div class="stat"><div class="k">Put in</div><div class="v">${usd(p.entry_value_usd)}</div></div>
      <div class="stat"><div class="k">P&L</div><div class="v ${cls(pnl)}">${signedUsd(pnl)}</div></div>
      <div class="stat"><div class="k">Fees paid</div><div class="v">${usd(p.fees_paid_usd)}</div></div>
    </div>
    <p><span class="muted">Your part of the pool:</span> ${held || '<span class="muted">–</span>'}</p>
    <div data-test="limits">${distance("Stop-loss", p.limits.stop_loss_bps, p.stop_loss_distance_bps)}
      ${distance("Take-profit", p.limits.take_profit_bps, p.take_profit_distance_bps)}
      ${distance("Max drawdown", p.limits.max_drawdown_bps, p.max_drawdown_distance_bps)}</div>
    <div data-panel="${p.vault}"></div></div>`;
}

function describe(n: Notification): string {
  const text: Record<string, string> = {
    "position.opened": "Your master opened a position",
    "position.closed": "Your master closed a position",
    "position.changed": "Your master changed a position",
    "exit.limit": "A limit of yours fired: you were exited",
    "limit.near": "Your position is near a limit",
    "copying.suspended": "Copying was suspended",
    "copying.resumed": "Copying resumed",
    "fee.charged": "A performance fee was charged",
    "mirror.executed": "A pending mirror was executed",
    "mirror.dropped": "A pending mirror was dropped",
    "exit.failed": "An exit at your exchange could not sell everything: the rest is yours to sell there",
    "bridge.filled": "An order copied at your exchange filled",
    "bridge.skipped": "An order for you was below the exchange's minimum: skipped",
    "bridge.failed": "The exchange refused an order copied for you",
    "bridge.expired": "An order copied for you was not done in time: what filled is booked",
  };
  return text[n.kind] ?? n.kind;
}
