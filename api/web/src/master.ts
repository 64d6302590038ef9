// A master's own screens: their vault (create, deposit, withdraw), a trade form over the hub's
// vetted routes, a delegate key, AUM, followers and the followers' aggregate P&L.
import type { Address } from "viem";
import { ApiError, get, type Profile } from "./api";
import { deployment, erc20Abi, type Deployment } from "./chain";
import { amount, cls, esc, parseUnits, short, signedUsd, usd } from "./format";
import { busy, errorBox, view, type Cleanup } from "./ui";
import { connected, onWalletChange, read, send } from "./wallet";

const ZERO = "0x0000000000000000000000000000000000000000";

export function masterView(): Cleanup {
  const root = view();
  const render = async () => {
    const w = connected();
    if (!w) {
      root.innerHTML = `<h1>My vault</h1><div class="card">Connect a wallet (top right) to manage your vault as a master.</div>`;
      return;
    }
    const dep = await deployment();
    let vault: Address = ZERO;
    try {
      vault = await read<Address>({ address: dep.hub, abi: dep.hubAbi, functionName: "vaultOf", args: [w.address] });
    } catch (e) {
      root.innerHTML = `<h1>My vault</h1>${errorBox(e)}`;
      return;
    }
    if (vault === ZERO) {
      root.innerHTML = `<h1>My vault</h1><div class="card"><p>You have no vault yet. A vault holds your own capital and the pool of your followers, who copy every trade you make in it.</p>
        <button id="create" data-test="create-vault">Create my vault</button><div id="msg"></div></div>`;
      root.querySelector("#create")?.addEventListener("click", (e) => busy(e.target as HTMLButtonElement, root.querySelector("#msg"), async () => {
        await send({ address: dep.hub, abi: dep.hubAbi, functionName: "createVault", args: [] });
        render();
      }));
      return;
    }
    let prof: Profile | null = null;
    try {
      prof = await get<Profile>(`/v1/masters/${w.address}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
    }
    const v = { address: vault, abi: dep.vaultAbi };
    const [tokens, delegate] = await Promise.all([
      read<readonly Address[]>({ ...v, functionName: "tokens", args: [] }),
      read<Address>({ ...v, functionName: "delegate", args: [] }),
    ]);
    const books = await Promise.all(tokens.map((t) => read<readonly [bigint, bigint]>({ ...v, functionName: "books", args: [t] })));
    const followersPnl = (prof?.followers ?? []).reduce((s, f) => s + BigInt(f.pnl_usd), 0n);
    const options = [...dep.tokens.values()].map((t) => `<option value="${t.address}">${t.symbol}</option>`).join("");
    root.innerHTML = `<h1>My vault <span class="muted" style="font-size:14px">${short(vault)}</span></h1>
      <div class="card grid">
        <div class="stat"><div class="k">AUM</div><div class="v">${usd(prof?.aum.total_usd)}</div></div>
        <div class="stat"><div class="k">Followers</div><div class="v">${prof?.followers_now ?? 0}</div></div>
        <div class="stat"><div class="k">Followers' P&L</div><div class="v ${cls(followersPnl)}">${signedUsd(followersPnl)}</div></div>
        <div class="stat"><div class="k">Delegate</div><div class="v">${delegate === ZERO ? "none" : short(delegate)}</div></div>
      </div>
      <div class="card scroll"><h2>Books</h2><table><thead><tr><th>Token</th><th>Yours</th><th>Followers' pool</th></tr></thead><tbody>
        ${tokens.map((t, i) => { const k = dep.tokens.get(t.toLowerCase()); return `<tr><td>${k?.symbol ?? short(t)}</td><td>${amount(books[i][0], k?.decimals ?? 18)}</td><td>${amount(books[i][1], k?.decimals ?? 18)}</td></tr>`; }).join("")}
      </tbody></table></div>
      <div class="card"><h2>Trade</h2><p class="muted">Your followers' pool trades with you, in the same swap, along the hub's vetted route.</p>
        <div class="row"><label><span>Sell</span><select id="tin">${options}</select></label><label><span>Buy</span><select id="tout">${options}</select></label>
        <label><span>Amount</span><input id="tamt" inputmode="decimal" size="10"></label><button id="trade" data-test="trade-submit">Trade</button></div><div id="tmsg"></div></div>
      <div class="card"><h2>Your capital</h2>
        <div class="row"><label><span>Deposit ${dep.base.symbol}</span><input id="damt" inputmode="decimal" size="10"></label><button id="dep">Deposit</button>
        <label><span>Withdraw ${dep.base.symbol}</span><input id="wamt" inputmode="decimal" size="10"></label><button id="wd" class="ghost">Withdraw</button></div><div id="cmsg"></div></div>
      <div class="card"><h2>Delegate key</h2><p class="muted">A delegate may trade for you and do nothing else.</p>
        <div class="row"><input id="del" placeholder="0x…" size="44" value="${delegate === ZERO ? "" : esc(delegate)}"><button id="setdel" class="ghost">Set delegate</button></div><div id="dmsg"></div></div>`;
    (root.querySelector("#tout") as HTMLSelectElement).selectedIndex = 1;
    const val = (id: string) => (root.querySelector(id) as HTMLInputElement).value;
    const units = (id: string, decimals: number) => {
      const n = parseUnits(val(id), decimals);
      if (!n) throw new Error("Enter an amount above zero.");
      return n;
    };
    root.querySelector("#trade")?.addEventListener("click", (e) => busy(e.target as HTMLButtonElement, root.querySelector("#tmsg"), async () => {
      const tin = val("#tin") as Address;
      const tout = val("#tout") as Address;
      if (tin === tout) throw new Error("Choose two different tokens.");
      const route = await read<{ adapter: Address; path: `0x${string}` }>({ address: dep.hub, abi: dep.hubAbi, functionName: "routeOf", args: [tin, tout] });
      if (route.adapter === ZERO) throw new Error("The hub has no vetted route between these tokens: trade through the base asset.");
      const amountIn = units("#tamt", dep.tokens.get(tin.toLowerCase())?.decimals ?? 18);
      await send({ ...v, functionName: "trade", args: [{ tokenIn: tin, tokenOut: tout, amountIn, minAmountOut: 0n, adapter: route.adapter, route: route.path, maxPoolIn: 0n }] });
      render();
    }));
    root.querySelector("#dep")?.addEventListener("click", (e) => busy(e.target as HTMLButtonElement, root.querySelector("#cmsg"), async () => {
      const n = units("#damt", dep.base.decimals);
      await send({ address: dep.base.address, abi: erc20Abi, functionName: "approve", args: [vault, n] });
      await send({ ...v, functionName: "depositMaster", args: [n] });
      render();
    }));
    root.querySelector("#wd")?.addEventListener("click", (e) => busy(e.target as HTMLButtonElement, root.querySelector("#cmsg"), async () => {
      await send({ ...v, functionName: "withdrawMaster", args: [dep.base.address, units("#wamt", dep.base.decimals)] });
      render();
    }));
    root.querySelector("#setdel")?.addEventListener("click", (e) => busy(e.target as HTMLButtonElement, root.querySelector("#dmsg"), async () => {
      const d = val("#del").trim() || ZERO;
      if (!/^0x[0-9a-fA-F]{40}$/.test(d)) throw new Error("A delegate is an address: 0x and 40 hexadecimal digits.");
      await send({ ...v, functionName: "setDelegate", args: [d] });
      render();
    }));
  };
  const safe = () => render().catch((e) => (root.innerHTML = `<h1>My vault</h1>${errorBox(e)}`));
  safe();
  return onWalletChange(safe);
}

export type { Deployment };
