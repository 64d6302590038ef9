// Copy in three steps: choose the master, set the allocation and limits, confirm. The
// transactions it takes (approve, deposit, allocate, limits) run as one flow: each is simulated
// before it is signed, its state is shown, and a failure stops the flow with a readable reason.
import type { Address } from "viem";
import { get, type Profile } from "./api";
import { deployment, erc20Abi, type Deployment } from "./chain";
import { readable } from "./errors";
import { amount, bps, cls, esc, parseUnits, pct, short, usd } from "./format";
import { connected, onWalletChange, read, send, wrongNetwork } from "./wallet";
import { errorBox, view, type Cleanup } from "./ui";

type Preset = "conservative" | "aggressive" | "custom";
const PRESETS = { conservative: [1000, 0, 1500], aggressive: [3000, 0, 4000] } as const;

interface Plan {
  vault: Address;
  allocation: bigint;
  deposit: bigint;
  approve: boolean;
  limits: { preset: Preset; values: [number, number, number]; change: boolean };
  shares: bigint;
  free: bigint;
  capBps: number;
}

interface Step { key: string; label: string; state: "waiting" | "active" | "done" | "skipped" | "failed"; note?: string; }

const form = { amount: "1000", preset: "conservative" as Preset, sl: "10", tp: "0", dd: "15", maxEntry: "50" };

export function copy(master: string | undefined): Cleanup {
  const root = view();
  let step = 1;
  let prof: Profile | null = null;
  let plan: Plan | null = null;
  let steps: Step[] = [];
  let running = false;
  let finished = false;
  let failure = "";

  const header = () => `<h1>Copy ${prof ? short(prof.master) : "a master"}</h1>
    <div class="steps" data-test="steps">${["Choose", "Allocation & limits", "Confirm"].map((t, i) => `<span class="${i + 1 === step ? "on" : ""}">${i + 1}. ${t}</span>`).join("")}</div>`;

  const render = async () => {
    if (!master) {
      root.innerHTML = `${header()}<div class="card">Choose a master first: <a href="#/">see the rankings</a>.</div>`;
      return;
    }
    try {
      prof ??= await get<Profile>(`/v1/masters/${master}`);
    } catch (e) {
      root.innerHTML = header() + errorBox(e);
      return;
    }
    const dep = await deployment();
    if (step === 1) return renderChoose(dep);
    if (step === 2) return renderLimits(dep);
    return renderConfirm(dep);
  };

  const renderChoose = (_dep: Deployment) => {
    const p = prof as Profile;
    const m = p.metrics.find((x) => x.window === "30d") ?? p.metrics[0];
    root.innerHTML = `${header()}<div class="card">
      <p>Master <b>${esc(p.master)}</b>, vault ${short(p.vault)}.</p>
      <div class="grid">
        <div class="stat"><div class="k">ROI (${m?.window ?? "–"})</div><div class="v ${cls(m?.roi)}">${pct(m?.roi)}</div></div>
        <div class="stat"><div class="k">Max drawdown</div><div class="v bad">${pct(m ? -m.max_drawdown : null)}</div></div>
        <div class="stat"><div class="k">Risk score</div><div class="v">${m?.risk_score ?? "–"}/10</div></div>
        <div class="stat"><div class="k">Fee on gains</div><div class="v">${p.fees.fee_bps === null ? "10% (default)" : bps(p.fees.fee_bps)}</div></div>
        <div class="stat"><div class="k">AUM</div><div class="v">${usd(p.aum.total_usd)}</div></div>
      </div>
      <p class="muted">You copy in the master's own transaction, at the master's price. You can leave at any time, in kind or to ${"USDC"}.</p>
      <div class="row"><a href="#/m/${p.master}">Back to the profile</a><button data-test="next1">Continue</button></div></div>`;
    root.querySelector("[data-test=next1]")?.addEventListener("click", () => {
      step = 2;
      render();
    });
  };

  const renderLimits = (dep: Deployment) => {
    const custom = form.preset === "custom";
    root.innerHTML = `${header()}<div class="card">
      <label><span>Allocation to this master (${dep.base.symbol})</span><input id="amount" data-test="amount" inputmode="decimal" value="${esc(form.amount)}"></label>
      <p class="muted">One master may hold at most ${bps(dep.capBps)} of your capital in Tandem: the flow deposits what this needs and the rest stays free in your account, yours to allocate or withdraw.</p>
      <h2>Limits</h2>
      <div class="preset" role="radiogroup">
        ${(["conservative", "aggressive", "custom"] as Preset[]).map((k) => `<label><input type="radio" name="preset" value="${k}" data-test="preset-${k}"${form.preset === k ? " checked" : ""}>${
          k === "conservative" ? "Conservative: stop-loss 10%, drawdown 15%" : k === "aggressive" ? "Aggressive: stop-loss 30%, drawdown 40%" : "Custom"}</label>`).join("")}
      </div>
      <div class="row"${custom ? "" : " hidden"} id="custom">
        <label><span>Stop-loss %</span><input id="sl" data-test="sl" size="4" value="${esc(form.sl)}"></label>
        <label><span>Take-profit %</span><input id="tp" data-test="tp" size="4" value="${esc(form.tp)}"></label>
        <label><span>Max drawdown %</span><input id="dd" data-test="dd" size="4" value="${esc(form.dd)}"></label>
      </div>
      <p class="muted">0 turns a limit off. A keeper exits you to ${dep.base.symbol} when one holds at oracle prices.</p>
      <details><summary>Entry cost bound</summary>
        <label><span>Most the entry swaps may cost (basis points)</span><input id="maxEntry" data-test="max-entry" size="4" value="${esc(form.maxEntry)}"></label>
      </details>
      <div id="msg"></div>
      <div class="row"><button class="ghost" data-test="back2">Back</button><button data-test="next2">Review</button></div></div>`;
    root.querySelectorAll<HTMLInputElement>("input[name=preset]").forEach((r) =>
      r.addEventListener("change", () => {
        form.preset = r.value as Preset;
        (root.querySelector("#custom") as HTMLElement).hidden = form.preset !== "custom";
      }),
    );
    root.querySelector("[data-test=back2]")?.addEventListener("click", () => {
      step = 1;
      render();
    });
    root.querySelector("[data-test=next2]")?.addEventListener("click", async () => {
      const v = (id: string) => (root.querySelector(`#${id}`) as HTMLInputElement).value;
      Object.assign(form, { amount: v("amount"), sl: v("sl"), tp: v("tp"), dd: v("dd"), maxEntry: v("maxEntry") });
      const msg = root.querySelector("#msg") as HTMLElement;
      const allocation = parseUnits(form.amount, dep.base.decimals);
      if (!allocation || allocation <= 0n) {
        msg.innerHTML = `<div class="error" role="alert">Enter an amount of ${dep.base.symbol} above zero.</div>`;
        return;
      }
      const limits = limitValues();
      if (!limits) {
        msg.innerHTML = `<div class="error" role="alert">Limits are percentages: stop-loss and drawdown 0 to 90, take-profit 0 to 500.</div>`;
        return;
      }
      if (!connected()) {
        msg.innerHTML = `<div class="error" role="alert">Connect a wallet (top right) to continue.</div>`;
        return;
      }
      step = 3;
      plan = null;
      render();
    });
  };

  const limitValues = (): [number, number, number] | null => {
    if (form.preset !== "custom") return [...PRESETS[form.preset]] as [number, number, number];
    const vals = [form.sl, form.tp, form.dd].map((x) => Math.round(Number(x) * 100));
    if (vals.some((x) => !Number.isFinite(x) || x < 0) || vals[0] > 9000 || vals[2] > 9000 || vals[1] > 50000) return null;
    return vals as [number, number, number];
  };

  const makePlan = async (dep: Deployment): Promise<Plan> => {
    const w = connected();
    if (!w) throw new Error("Connect a wallet first.");
    const wrong = await wrongNetwork();
    if (wrong) throw new Error(`Your wallet is on chain ${wrong.have}; Tandem here runs on chain ${wrong.want}. Switch networks first.`);
    const p = prof as Profile;
    const vault = p.vault as Address;
    const me = w.address;
    const allocation = parseUnits(form.amount, dep.base.decimals) as bigint;
    const hub = { address: dep.hub, abi: dep.hubAbi };
    const [account, already, capBps, balance, allowance, current, shares] = await Promise.all([
      read<{ free: bigint; allocated: bigint }>({ ...hub, functionName: "account", args: [me] }),
      read<bigint>({ ...hub, functionName: "allocationOf", args: [me, vault] }),
      read<bigint>({ ...hub, functionName: "allocationCapOf", args: [me] }),
      read<bigint>({ address: dep.base.address, abi: erc20Abi, functionName: "balanceOf", args: [me] }),
      read<bigint>({ address: dep.base.address, abi: erc20Abi, functionName: "allowance", args: [me, dep.hub] }),
      read<readonly [{ stopLossBps: number; takeProfitBps: number; maxDrawdownBps: number }, bigint, bigint]>({ address: vault, abi: dep.vaultAbi, functionName: "limitsOf", args: [me] }),
      read<bigint>({ address: vault, abi: dep.vaultAbi, functionName: "previewAllocate", args: [allocation] }).catch(() => 0n),
    ]);
    const cap = capBps > 0n ? capBps : BigInt(dep.capBps);
    const capital = (already + allocation) * 10_000n;
    const forCap = (capital + cap - 1n) / cap - account.free - account.allocated;
    const forFree = allocation - account.free;
    let deposit = forCap > forFree ? forCap : forFree;
    if (deposit < 0n) deposit = 0n;
    if (deposit > balance) {
      throw new Error(`This needs a deposit of ${amount(deposit, dep.base.decimals)} ${dep.base.symbol} but your wallet holds ${amount(balance, dep.base.decimals)}. Nothing was sent.`);
    }
    const values = limitValues() as [number, number, number];
    const have = [current[0].stopLossBps, current[0].takeProfitBps, current[0].maxDrawdownBps];
    const change = already === 0n && form.preset === "conservative" ? false : have.some((x, i) => Number(x) !== values[i]);
    return {
      vault, allocation, deposit, approve: deposit > 0n && allowance < deposit,
      limits: { preset: form.preset, values, change }, shares, free: account.free, capBps: Number(cap),
    };
  };

  const renderConfirm = async (dep: Deployment) => {
    const sym = dep.base.symbol;
    if (!plan && !running) {
      root.innerHTML = `${header()}<div class="card"><p class="muted">Reading your balances…</p></div>`;
      try {
        plan = await makePlan(dep);
      } catch (e) {
        root.innerHTML = `${header()}<div class="card">${errorBox(e)}<button class="ghost" data-test="back3">Back</button></div>`;
        root.querySelector("[data-test=back3]")?.addEventListener("click", () => {
          step = 2;
          render();
        });
        return;
      }
      const pl = plan;
      const [sl, tp, dd] = pl.limits.values;
      steps = [
        { key: "approve", label: `Approve ${amount(pl.deposit, dep.base.decimals)} ${sym} for the hub`, state: pl.approve ? "waiting" : "skipped", note: pl.approve ? undefined : "not needed" },
        { key: "deposit", label: `Deposit ${amount(pl.deposit, dep.base.decimals)} ${sym} into your Tandem account`, state: pl.deposit > 0n ? "waiting" : "skipped", note: pl.deposit > 0n ? undefined : "your free balance covers it" },
        { key: "allocate", label: `Allocate ${amount(pl.allocation, dep.base.decimals)} ${sym} to ${short(master)}`, state: "waiting" },
        { key: "limits", label: `Set limits: stop-loss ${bps(sl || null)}, take-profit ${bps(tp || null)}, drawdown ${bps(dd || null)}`, state: pl.limits.change ? "waiting" : "skipped", note: pl.limits.change ? undefined : "already in force" },
      ];
    }
    const pl = plan as Plan;
    root.innerHTML = `${header()}<div class="card">
      <p>You allocate <b>${amount(pl.allocation, dep.base.decimals)} ${sym}</b> to master ${short(master)}.
      ${pl.deposit > 0n ? `The flow deposits <b>${amount(pl.deposit, dep.base.decimals)} ${sym}</b>: one master may hold at most ${bps(pl.capBps)} of your capital in Tandem; what is not allocated stays free in your account.` : ""}</p>
      <ol class="flow" data-test="flow">${steps.map((s) => `<li data-step="${s.key}" data-state="${s.state}"><span>${esc(s.label)}</span><span class="muted">${esc(s.note ?? stateText(s.state))}</span></li>`).join("")}</ol>
      <div id="result">${finished ? `<div class="ok" data-test="copied">Done: you copy ${short(master)}. <a href="#/dashboard">Open your dashboard</a>.</div>` : failure}</div>
      <div class="row">${finished ? "" : `<button class="ghost" data-test="back3"${running ? " disabled" : ""}>Back</button><button data-test="confirm"${running ? " disabled" : ""}>Confirm and send</button>`}</div></div>`;
    root.querySelector("[data-test=back3]")?.addEventListener("click", () => {
      step = 2;
      render();
    });
    root.querySelector("[data-test=confirm]")?.addEventListener("click", () => execute(dep));
  };

  const execute = async (dep: Deployment) => {
    const pl = plan as Plan;
    running = true;
    const set = (key: string, state: Step["state"], note?: string) => {
      const s = steps.find((x) => x.key === key) as Step;
      s.state = state;
      s.note = note;
      render();
    };
    let current = "";
    failure = "";
    try {
      const [sl, tp, dd] = pl.limits.values;
      const calls = {
        approve: { address: dep.base.address, abi: erc20Abi, functionName: "approve", args: [dep.hub, pl.deposit] },
        deposit: { address: dep.hub, abi: dep.hubAbi, functionName: "deposit", args: [pl.deposit] },
        allocate: { address: dep.hub, abi: dep.hubAbi, functionName: "allocate", args: [pl.vault, pl.allocation, BigInt(Math.round(Number(form.maxEntry) || 0))] },
        limits: pl.limits.preset === "custom"
          ? { address: pl.vault, abi: dep.vaultAbi, functionName: "setLimits", args: [{ stopLossBps: sl, takeProfitBps: tp, maxDrawdownBps: dd }] }
          : { address: pl.vault, abi: dep.vaultAbi, functionName: "setPreset", args: [pl.limits.preset === "aggressive" ? 1 : 0] },
      } as const;
      for (const s of steps) {
        if (s.state === "done" || s.state === "skipped") continue;
        current = s.key;
        set(s.key, "active", "confirm in your wallet…");
        await send(calls[s.key as keyof typeof calls], () => set(s.key, "active", "sent, waiting for the block…"));
        set(s.key, "done", "done");
      }
      finished = true;
      running = false;
      render();
    } catch (e) {
      running = false;
      const done = steps.filter((s) => s.state === "done").map((s) => s.key);
      const text = readable(e);
      const after = done.includes("deposit")
        ? " Your deposit is in your Tandem account, free: confirm again to retry, or withdraw it from the dashboard."
        : done.length || /nothing/i.test(text) ? "" : " Nothing was sent.";
      failure = `<div class="error" role="alert" data-test="error">${esc(text)}${esc(after)}</div>`;
      set(current, "failed", "failed");
    }
  };

  render();
  const off = onWalletChange(() => {
    if (!running) {
      plan = null;
      render();
    }
  });
  return off;
}

function stateText(s: Step["state"]): string {
  return { waiting: "to do", active: "in progress", done: "done", skipped: "skipped", failed: "failed" }[s];
}
