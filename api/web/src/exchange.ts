// Exchange followers: copy a master onto your own centralised exchange account through the CEX
// bridge. The second factor (TOTP) is enrolled with a freshly signed message; an exchange key is
// sent to the API once, with a TOTP code, and never kept in the browser: no storage, and the
// form's fields are emptied as soon as it is sent. The copied orders and their execution drag
// are read again every second while the page is open. A follow's allocation is changed (raising
// it needs a code, lowering the session alone) and a follow is stopped from the list of keys.
import { ApiError, del, get, patch, post, type DragRow, type ExchangeFollow, type ExchangeKey, type FollowDrag, type MasterPage, type MyDrag, type Session } from "./api";
import { bps, date, esc, short } from "./format";
import { busy, errorBox, q, view, type Cleanup } from "./ui";
import { connected, onWalletChange, signedIn, signIn, signStatement } from "./wallet";

// The statement the API asks for (api.accounts.signin.ACTIONS["enrol-totp"]), word for word.
const ENROL_TOTP =
  "Enrol a new TOTP authenticator as the second factor of this address on Tandem. Every other session of this address is signed out.";
const EXCHANGES: [string, string][] = [["binance", "Binance"], ["okx", "OKX"], ["bybit", "Bybit"], ["bitget", "Bitget"]];
const NEEDS_PASSPHRASE = new Set(["okx", "bitget"]);
const REFRESH_MS = 1000;

/** What to do, for the refusals whose API wording speaks to integrators (headers, routes). */
function explain(error: unknown): unknown {
  if (!(error instanceof ApiError)) return error;
  const said: Record<string, string> = {
    "second-factor-required": "Enter the 6-digit code your authenticator shows now.",
    "second-factor-not-enrolled": "Enrol an authenticator first (step 1 above), then connect the key.",
    "second-factor-enrolled": "An authenticator is enrolled already for this address: reload the page to connect keys with it.",
  };
  const better = said[error.problem];
  return better ? new ApiError(error.status, error.title, better, error.problem) : error;
}

const ms = (v: number | null) => (v === null ? "–" : v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
const num = (v: string | null, digits = 4) => (v === null ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits }));
const slip = (v: number | null) => (v === null ? "–" : `<span class="${v > 0 ? "bad" : v < 0 ? "good" : ""}">${v > 0 ? "+" : ""}${v.toFixed(1)} bps</span>`);

export function exchangeView(): Cleanup {
  const root = view();
  let timer: number | undefined;
  let stopped = false;
  let masters: { label: string; vault: string }[] = [];
  let shown = ""; // the lists' data last drawn: redrawn only when it changed

  const render = async () => {
    window.clearTimeout(timer);
    const w = connected();
    if (!w) {
      root.innerHTML = `<h1>Exchange followers</h1><div class="card">Connect a wallet (top right): your exchange keys and copied orders belong to your address.</div>`;
      return;
    }
    if (!signedIn()) {
      root.innerHTML = `<h1>Exchange followers</h1><div class="card"><p>Copy a master onto your own exchange account (Binance, OKX, Bybit or Bitget). Sign in with your wallet first: your keys and orders are kept under your address.</p>
        <button id="signin" data-test="exchange-sign-in">Sign in</button><div id="smsg"></div></div>`;
      q(root, "#signin").addEventListener("click", (e) => busy(e.target as HTMLButtonElement, root.querySelector("#smsg"), signIn));
      return;
    }
    const [session, page] = await Promise.all([
      get<Session>("/v1/auth/session"),
      get<MasterPage>("/v1/masters", { window: "all", ranked_only: false, limit: 100, sort: "followers_now" }).catch(() => null),
    ]);
    masters = (page?.items ?? []).map((m) => ({ label: `${short(m.master)} · vault ${short(m.vault)}`, vault: m.vault }));
    shown = "";
    root.innerHTML = `<h1>Exchange followers</h1>
      <p class="muted">The bridge copies a master's trades onto your exchange account as orders of the same fraction of your equity there. Your key is sent to the server once, sealed there, and never kept in this browser.</p>
      <div class="card" id="totp" data-test="totp-card">${session.second_factor ? enrolledHtml() : enrolHtml()}</div>
      <div class="card" id="connect-key">${connectHtml(session.second_factor)}</div>
      <div class="card" id="keys" data-test="keys"><h2>Your exchange keys</h2><p class="muted">Loading…</p></div>
      <div class="card" id="follow-edit" data-test="follow-edit" hidden>${editHtml()}</div>
      <div class="card" id="drag" data-test="drag"><h2>Copied orders and their drag</h2><p class="muted">Loading…</p></div>`;
    if (!session.second_factor) wireEnrol();
    wireConnect();
    wireEdit();
    await refresh();
  };

  // --- 1. the second factor

  const enrolledHtml = () => `<h2>1. Second factor</h2><p class="ok" data-test="totp-enrolled">An authenticator is enrolled: each key you connect needs its current code.</p>`;
  const enrolHtml = () => `<h2>1. Second factor</h2>
    <p>Connecting an exchange key needs a code from an authenticator app (TOTP). Enrolling asks your wallet to sign a message stating it; other sessions of your address are signed out.</p>
    <button id="enrol" data-test="totp-enrol">Enrol an authenticator</button><div id="emsg"></div>
    <div id="enrolling" hidden>
      <p>Add this secret to your authenticator app (or open the link on your phone), then enter the code it shows.</p>
      <p><code class="secret" data-test="totp-secret" id="tsecret"></code></p>
      <p class="muted wrap"><a id="turi" data-test="totp-uri" href="#">otpauth link</a></p>
      <div class="row"><label><span>Code</span><input id="tcode" data-test="totp-code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" size="8"></label>
        <button id="tconfirm" data-test="totp-confirm">Confirm</button></div><div id="cmsg"></div>
    </div>`;

  const wireEnrol = () => {
    q(root, "#enrol").addEventListener("click", (e) =>
      busy(e.target as HTMLButtonElement, root.querySelector("#emsg"), async () => {
        const signed = await signStatement(ENROL_TOTP, 600_000);
        const made = await post<{ secret: string; uri: string }>("/v1/account/totp", signed).catch((x) => Promise.reject(explain(x)));
        q(root, "#tsecret").textContent = made.secret;
        const link = q<HTMLAnchorElement>(root, "#turi");
        link.href = made.uri;
        link.textContent = made.uri;
        q(root, "#enrolling").hidden = false;
        q<HTMLInputElement>(root, "#tcode").focus();
      }),
    );
    q(root, "#tconfirm").addEventListener("click", (e) =>
      busy(e.target as HTMLButtonElement, root.querySelector("#cmsg"), async () => {
        const input = q<HTMLInputElement>(root, "#tcode");
        const code = input.value.trim();
        input.value = "";
        if (!/^\d{6}$/.test(code)) throw new Error("A code is the 6 digits your authenticator shows.");
        await post("/v1/account/totp/confirm", { code }).catch((x) => Promise.reject(explain(x)));
        q(root, "#totp").innerHTML = enrolledHtml();
        q<HTMLButtonElement>(root, "#send-key").disabled = false;
      }),
    );
  };

  // --- 2. connect a key

  const connectHtml = (enrolled: boolean) => `<h2>2. Connect an exchange key</h2>
    <p class="muted">Create a key on the exchange with <b>spot trading only</b> (withdrawals off) and, better, restricted to the bridge's IP addresses. A key that can withdraw is refused.</p>
    <form id="keyform" autocomplete="off" data-test="key-form">
      <div class="row">
        <label><span>Exchange</span><select id="kexchange" data-test="key-exchange">${EXCHANGES.map(([v, n]) => `<option value="${v}">${n}</option>`).join("")}</select></label>
        <label><span>API key</span><input id="kapi" data-test="key-api" autocomplete="off" spellcheck="false" size="24"></label>
        <label><span>Secret</span><input id="ksecret" data-test="key-secret" type="password" autocomplete="off" size="24"></label>
        <label id="kpassrow" hidden><span>Passphrase</span><input id="kpass" data-test="key-passphrase" type="password" autocomplete="off" size="16"></label>
      </div>
      <div class="row">
        <label><span>Master to copy</span><select id="kvault" data-test="key-vault">${masters.map((m) => `<option value="${esc(m.vault)}">${esc(m.label)}</option>`).join("")}</select></label>
        <label><span>Allocation (USDT)</span><input id="kalloc" data-test="key-allocation" inputmode="decimal" size="10" value="1000"></label>
        <label><span>Stop-loss %</span><input id="kstop" data-test="key-stop-loss" inputmode="decimal" size="5" placeholder="off"></label>
        <label><span>Max drawdown %</span><input id="kdd" data-test="key-drawdown" inputmode="decimal" size="5" placeholder="off"></label>
      </div>
      <div class="row">
        <label><span>Authenticator code</span><input id="kcode" data-test="key-code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" size="8"></label>
        <button id="send-key" data-test="key-submit" type="submit"${enrolled ? "" : " disabled"}>Connect key</button>
      </div>
    </form><div id="kmsg" data-test="key-message" aria-live="polite"></div>`;

  const percentToBps = (text: string, what: string): number | null => {
    const t = text.trim().replace(/%$/, "");
    if (!t) return null;
    const v = Number(t);
    if (!Number.isFinite(v) || v <= 0 || v >= 100) throw new Error(`${what} is a percentage above 0 and below 100, or empty for none.`);
    return Math.round(v * 100);
  };

  const wireConnect = () => {
    const form = q<HTMLFormElement>(root, "#keyform");
    const exchange = q<HTMLSelectElement>(root, "#kexchange");
    const passRow = q(root, "#kpassrow");
    const sync = () => (passRow.hidden = !NEEDS_PASSPHRASE.has(exchange.value));
    exchange.addEventListener("change", sync);
    sync();
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const out = q(root, "#kmsg");
      busy(q<HTMLButtonElement>(root, "#send-key"), out, async () => {
        const field = (id: string) => q<HTMLInputElement>(root, id);
        // Read, then empty at once: the secret lives in this function's variables only until sent.
        const credentials = ["#kapi", "#ksecret", "#kpass", "#kcode"].map((id) => field(id).value.trim());
        for (const id of ["#kapi", "#ksecret", "#kpass", "#kcode"]) field(id).value = "";
        const [apiKey, secret, passphrase, code] = credentials;
        if (!apiKey || !secret) throw new Error("Give the key's API key and secret, as the exchange showed them. Type them again: the form was emptied.");
        if (NEEDS_PASSPHRASE.has(exchange.value) && !passphrase) throw new Error("OKX and Bitget keys have a passphrase: give it too. Type the key again: the form was emptied.");
        if (!/^\d{6}$/.test(code)) throw new Error("Enter the 6-digit code your authenticator shows now. Type the key again: the form was emptied.");
        const vault = q<HTMLSelectElement>(root, "#kvault").value;
        if (!vault) throw new Error("Choose the master to copy.");
        const follow = {
          vault,
          allocation: field("#kalloc").value.trim(),
          stop_loss_bps: percentToBps(field("#kstop").value, "The stop-loss"),
          max_drawdown_bps: percentToBps(field("#kdd").value, "The maximum drawdown"),
        };
        if (!/^\d+(\.\d+)?$/.test(follow.allocation) || Number(follow.allocation) <= 0) throw new Error("The allocation is an amount of USDT above zero, e.g. 1000.");
        const body = { exchange: exchange.value, api_key: apiKey, secret, passphrase: passphrase || null, follow };
        let key: ExchangeKey;
        try {
          key = await post<ExchangeKey>("/v1/account/exchange-keys", body, { "Tandem-TOTP": code });
        } catch (x) {
          throw explain(x);
        }
        for (const id of ["#kstop", "#kdd"]) field(id).value = "";
        out.innerHTML = `<div class="ok" data-test="key-connected">Connected: ${esc(exchangeName(key.exchange))} key ${esc(key.api_key_hint)}. The bridge copies the master's next trades onto it.</div>
          ${key.warnings.map((x) => `<div class="warnbox" role="status" data-test="key-warning">Warning: ${esc(x)}.</div>`).join("")}`;
        await refresh();
      });
    });
  };

  // --- 3. the keys and 4. the drag, read again every second

  const refresh = async () => {
    window.clearTimeout(timer);
    if (stopped || !root.querySelector("#drag")) return;
    try {
      const [keys, drag] = await Promise.all([get<{ items: ExchangeKey[] }>("/v1/account/exchange-keys"), get<MyDrag>("/v1/account/drag", { limit: 100 })]);
      const data = JSON.stringify([keys, drag]);
      if (data !== shown) {
        shown = data;
        q(root, "#keys").innerHTML = keysHtml(keys.items);
        q(root, "#drag").innerHTML = dragHtml(drag);
        wireRemove();
        wireFollows();
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return void render();
      q(root, "#drag").innerHTML = `<h2>Copied orders and their drag</h2>${errorBox(e)}`;
    }
    if (!stopped) timer = window.setTimeout(refresh, REFRESH_MS);
  };

  const vaultLabel = (vault: string) => masters.find((m) => m.vault.toLowerCase() === vault.toLowerCase())?.label ?? short(vault);

  const keysHtml = (keys: ExchangeKey[]) => `<h2>Your exchange keys</h2>${
    keys.length
      ? `<div class="scroll"><table class="stack"><thead><tr><th>Exchange</th><th>Key</th><th>Copies</th><th>Allocation</th><th>Limits</th><th>Status</th><th></th></tr></thead><tbody>
        ${keys.map((k) => k.follows.map((f, i) => `<tr data-test="key-row" data-exchange="${esc(k.exchange)}">
          <td data-label="Exchange">${i ? "" : esc(exchangeName(k.exchange))}</td><td data-label="Key">${i ? "" : `<span><code>${esc(k.api_key_hint)}</code>${k.ip_restricted ? "" : ` <span class="chip warnchip" title="${esc(k.warnings.join("; "))}">any IP</span>`}</span>`}</td>
          <td data-label="Copies">${esc(vaultLabel(f.vault))}</td><td data-label="Allocation"><span>${num(f.allocation, 2)} USDT<br><span class="muted">${num(f.cash, 2)} in cash</span></span></td>
          <td data-label="Limits"><span>stop ${bps(f.stop_loss_bps)}<br>drawdown ${bps(f.max_drawdown_bps)}</span></td>
          <td data-label="Status"><span><span class="chip ${k.status === "active" && f.status === "active" ? "good" : "bad"}" data-test="key-status">${esc(k.status === "active" ? f.status : k.status)}</span>${(k.reason ?? f.reason) ? `<br><span class="muted wrap">${esc(k.reason ?? f.reason)}</span>` : ""}</span></td>
          <td><span>${f.status === "active" ? followButtons(k, f) : ""}${i ? "" : `<button class="ghost" data-remove="${k.id}" data-test="key-remove">Remove</button>`}</span></td></tr>`).join("")).join("")}
      </tbody></table></div><div id="rmsg"></div>`
      : `<p class="muted" data-test="no-keys">No key connected yet.</p>`
  }`;

  const followButtons = (k: ExchangeKey, f: ExchangeFollow) =>
    `<button class="ghost" data-edit="${k.id}/${f.id}" data-allocation="${esc(f.allocation)}" data-test="follow-change">Change allocation</button><br>
     <button class="ghost" data-stop="${k.id}/${f.id}" data-test="follow-stop">Stop copying</button><br>`;

  // --- a follow's allocation: in a card of its own, which the refresh every second leaves alone

  const editHtml = () => `<h2>Change an allocation</h2>
    <p class="muted">Raising it puts more of your money at the exchange to work: it needs your authenticator's code. Lowering it needs none; only the cash the follow holds can be released (what it holds in positions comes back as the master sells).</p>
    <form id="editform" autocomplete="off"><div class="row">
      <label><span>Allocation (USDT)</span><input id="falloc" data-test="follow-allocation" inputmode="decimal" size="12"></label>
      <label><span>Authenticator code (to raise)</span><input id="fcode" data-test="follow-code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" size="8"></label>
      <button id="fsave" data-test="follow-save" type="submit">Save</button>
      <button id="fcancel" class="ghost" type="button">Cancel</button>
    </div></form><div id="fmsg" data-test="follow-message" aria-live="polite"></div>`;

  let editing = ""; // "<key id>/<follow id>" of the follow the card changes

  const wireEdit = () => {
    const card = q(root, "#follow-edit");
    q(root, "#fcancel").addEventListener("click", () => (card.hidden = true));
    q<HTMLFormElement>(root, "#editform").addEventListener("submit", (e) => {
      e.preventDefault();
      const out = q(root, "#fmsg");
      busy(q<HTMLButtonElement>(root, "#fsave"), out, async () => {
        const allocation = q<HTMLInputElement>(root, "#falloc").value.trim();
        const codeInput = q<HTMLInputElement>(root, "#fcode");
        const code = codeInput.value.trim();
        codeInput.value = "";
        if (!/^\d+(\.\d+)?$/.test(allocation) || Number(allocation) <= 0) throw new Error("The allocation is an amount of USDT above zero, e.g. 1000.");
        if (code && !/^\d{6}$/.test(code)) throw new Error("A code is the 6 digits your authenticator shows.");
        let follow: ExchangeFollow;
        try {
          follow = await patch<ExchangeFollow>(`/v1/account/exchange-keys/${editing.split("/")[0]}/follows/${editing.split("/")[1]}`, { allocation }, code ? { "Tandem-TOTP": code } : undefined);
        } catch (x) {
          if (x instanceof ApiError && x.problem === "second-factor-required") throw new ApiError(x.status, x.title, "Raising the allocation needs the 6-digit code your authenticator shows now.", x.problem);
          throw explain(x);
        }
        out.innerHTML = `<div class="ok" data-test="follow-changed">Allocation now ${num(follow.allocation, 2)} USDT, ${num(follow.cash, 2)} of it in cash. The bridge sizes the master's next trades by it.</div>`;
        shown = "";
        await refresh();
      });
    });
  };

  const wireFollows = () => {
    root.querySelectorAll<HTMLButtonElement>("[data-edit]").forEach((b) =>
      b.addEventListener("click", () => {
        editing = b.dataset.edit ?? "";
        const card = q(root, "#follow-edit");
        q<HTMLInputElement>(root, "#falloc").value = b.dataset.allocation ?? "";
        q(root, "#fmsg").innerHTML = "";
        card.hidden = false;
        q<HTMLInputElement>(root, "#falloc").focus();
      }),
    );
    root.querySelectorAll<HTMLButtonElement>("[data-stop]").forEach((b) =>
      b.addEventListener("click", () => {
        // Two clicks, no dialog: the second confirms. Nothing is sold: what the follow holds
        // stays on the exchange account.
        if (b.dataset.armed !== "1") {
          b.dataset.armed = "1";
          b.textContent = "Stop: sure? (nothing is sold)";
          b.classList.remove("ghost");
          return;
        }
        busy(b, root.querySelector("#rmsg"), async () => {
          const [key, follow] = (b.dataset.stop ?? "").split("/");
          await del(`/v1/account/exchange-keys/${key}/follows/${follow}`);
          if (editing === b.dataset.stop) q(root, "#follow-edit").hidden = true;
          shown = "";
          await refresh();
        });
      }),
    );
  };

  const wireRemove = () => {
    root.querySelectorAll<HTMLButtonElement>("[data-remove]").forEach((b) =>
      b.addEventListener("click", () => {
        // Two clicks, no dialog: the second confirms.
        if (b.dataset.armed !== "1") {
          b.dataset.armed = "1";
          b.textContent = "Remove: sure?";
          b.classList.remove("ghost");
          return;
        }
        busy(b, root.querySelector("#rmsg"), async () => {
          await del(`/v1/account/exchange-keys/${b.dataset.remove}`);
          shown = "";
          await refresh();
        });
      }),
    );
  };

  const dragHtml = (drag: MyDrag) => `<h2>Copied orders and their drag</h2>
    <p class="muted">Each master trade the bridge copied onto your account: milliseconds from the master's block to the order being sent, acknowledged and filled, the fill against the master's on-chain price (positive when worse for you) and the fee. Read again every second.</p>
    ${drag.follows.length ? `<div class="grid" style="margin-bottom:10px">${drag.follows.map(followHtml).join("")}</div>` : ""}
    ${
      drag.items.length
        ? `<div class="scroll"><table class="stack" data-test="drag-orders"><thead><tr><th>Block time</th><th>Exchange</th><th>Order</th><th>Status</th><th>Filled</th><th>Master's price</th><th>Slippage</th><th>Fee (USDT)</th><th>Block → sent / ack / fill</th></tr></thead><tbody>
          ${drag.items.map(rowHtml).join("")}</tbody></table></div>`
        : `<p class="muted" data-test="no-orders">No copied order yet: they appear here at the master's next trade.</p>`
    }`;

  const followHtml = (f: FollowDrag) => `<div class="stat" data-test="follow-drag"><div class="k">${esc(exchangeName(f.exchange))} · <span class="as-is">${esc(vaultLabel(f.vault))}</span></div>
    <div>${f.filled} filled of ${f.orders}${f.skipped ? `, ${f.skipped} skipped` : ""}${f.exits ? `, ${f.exits} limit exits` : ""}</div>
    <div class="muted">block → fill p50 ${ms(f.p50_filled_ms)}, p99 ${ms(f.p99_filled_ms)}; slippage ${slip(f.mean_slippage_bps)}; fees ${num(f.fees, 4)} USDT</div></div>`;

  const rowHtml = (r: DragRow) => `<tr data-test="drag-row" data-trade="${esc(r.trade)}" data-status="${esc(r.status)}">
    <td data-label="Block time"><span>${r.block_time ? date(r.block_time) : "–"}<br><span class="muted">trade ${esc(r.trade)}</span></span></td>
    <td data-label="Exchange">${esc(exchangeName(r.exchange))}</td>
    <td data-label="Order"><span>${r.kind === "exit" ? `<span class="chip bad">limit exit</span> ` : ""}${esc(r.side)} ${esc(r.symbol)}<br><span class="muted">${num(r.size)} ${r.side === "buy" ? "USDT" : esc(r.symbol.split("/")[0])}</span></span></td>
    <td data-label="Status"><span><span class="chip ${r.status === "filled" ? "good" : r.status === "skipped" || r.status === "failed" ? "bad" : ""}">${esc(r.status)}</span>${r.reason ? `<br><span class="muted wrap" data-test="drag-reason">${esc(r.reason)}</span>` : ""}</span></td>
    <td data-label="Filled">${r.filled === null ? "–" : `${num(r.filled, 6)} @ ${num(r.average, 2)}`}</td>
    <td data-label="Master's price">${num(r.master_price, 2)}</td>
    <td data-label="Slippage" data-test="drag-slippage">${slip(r.slippage_bps)}</td>
    <td data-label="Fee (USDT)">${num(r.fee, 4)}</td>
    <td data-label="Block → sent / ack / fill" data-test="drag-times">${ms(r.sent_ms)} / ${ms(r.acked_ms)} / ${ms(r.filled_ms)}</td></tr>`;

  const safe = () =>
    render().catch((e) => {
      if (e instanceof ApiError && e.status === 401) return void render();
      root.innerHTML = `<h1>Exchange followers</h1>${errorBox(e)}`;
    });
  safe();
  const unwatch = onWalletChange(safe);
  return () => {
    stopped = true;
    window.clearTimeout(timer);
    unwatch();
  };
}

function exchangeName(id: string): string {
  return EXCHANGES.find(([v]) => v === id)?.[1] ?? id;
}
