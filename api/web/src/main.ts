// The dApp's entry point: the hash router, the wallet menu, the network banner and the theme.
import "./style.css";
import { copy } from "./copy";
import { dashboard } from "./dashboard";
import { discover } from "./discover";
import { esc, short } from "./format";
import { onStatus } from "./live";
import { exchangeView } from "./exchange";
import { masterView } from "./master";
import { profile } from "./profile";
import { banner, busy, errorBox, type Cleanup } from "./ui";
import {
  connectDemo,
  connectInjected,
  connected,
  demoAvailable,
  disconnect,
  onWalletChange,
  restore,
  signedIn,
  signIn,
  signOut,
  switchNetwork,
  wallets,
  wrongNetwork,
} from "./wallet";

let cleanup: Cleanup = () => {};

function route(): void {
  cleanup();
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, arg] = hash.split("/");
  document.querySelectorAll<HTMLAnchorElement>("#nav a").forEach((a) => a.classList.toggle("on", a.getAttribute("href") === `#/${page ?? ""}`));
  if (page === "m" && arg) cleanup = profile(arg);
  else if (page === "copy") cleanup = copy(arg);
  else if (page === "dashboard") cleanup = dashboard();
  else if (page === "master") cleanup = masterView();
  else if (page === "exchange") cleanup = exchangeView();
  else cleanup = discover();
  window.scrollTo(0, 0);
}

// --- theme: the system's by default, the user's choice remembered

function applyTheme(): void {
  const chosen = localStorage.getItem("tandem.theme");
  const dark = chosen ? chosen === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}
document.getElementById("theme")?.addEventListener("click", () => {
  localStorage.setItem("tandem.theme", document.documentElement.dataset.theme === "dark" ? "light" : "dark");
  applyTheme();
  route(); // charts take their colours when drawn
});
applyTheme();

// --- the wallet menu

let demo = false;
let liveText = "";

async function renderWallet(): Promise<void> {
  const el = document.getElementById("wallet") as HTMLElement;
  const w = connected();
  if (!w) {
    el.innerHTML = `<button id="connect" data-test="connect">Connect</button>`;
    el.querySelector("#connect")?.addEventListener("click", openMenu);
  } else {
    el.innerHTML = `<span class="chip" data-test="account" title="${esc(w.address)}">${esc(w.name)} · ${short(w.address)}</span>
      ${signedIn() ? `<button class="ghost" id="signout" data-test="signed-in">Signed in ✓</button>` : `<button class="ghost" id="signin" data-test="sign-in">Sign in</button>`}
      <button class="ghost" id="disconnect" aria-label="Disconnect">✕</button> <span class="muted" id="livestate" data-test="live">${liveText}</span>`;
    el.querySelector("#disconnect")?.addEventListener("click", disconnect);
    el.querySelector("#signout")?.addEventListener("click", () => signOut());
    el.querySelector("#signin")?.addEventListener("click", (e) =>
      busy(e.target as HTMLButtonElement, null, async () => {
        await signIn();
        banner("");
      }),
    );
  }
  const wrong = await wrongNetwork();
  if (wrong) {
    banner(`<div class="error" role="alert" data-test="wrong-network">Your wallet is on chain ${wrong.have}; Tandem here runs on chain ${wrong.want}. Transactions are blocked until you switch.
      <button id="switch" data-test="switch-network">Switch network</button></div>`);
    document.getElementById("switch")?.addEventListener("click", (e) =>
      busy(e.target as HTMLButtonElement, null, async () => {
        await switchNetwork();
      }),
    );
  } else if (document.querySelector("[data-test=wrong-network]")) banner("");
}

function openMenu(): void {
  const list = wallets();
  const dialog = document.createElement("dialog");
  dialog.innerHTML = `<h2>Connect a wallet</h2>
    ${list.map((w) => `<p><button class="ghost" data-uuid="${esc(w.info.uuid)}" data-test="wallet-option">${w.info.icon ? `<img src="${esc(w.info.icon)}" alt="" width="18" height="18"> ` : ""}${esc(w.info.name)}</button></p>`).join("") || '<p class="muted">No wallet found in this browser.</p>'}
    ${demo ? `<p><button data-test="demo">Try it: a funded test account</button><br><span class="muted">Local platform only: a key made in this tab, given test ETH and 100,000 USDC.</span></p>` : ""}
    <div id="cmsg"></div><p><button class="ghost" value="cancel" id="close">Close</button></p>`;
  document.body.append(dialog);
  dialog.showModal();
  const done = () => {
    dialog.close();
    dialog.remove();
  };
  dialog.querySelector("#close")?.addEventListener("click", done);
  dialog.querySelectorAll<HTMLButtonElement>("[data-uuid]").forEach((b) =>
    b.addEventListener("click", () => busy(b, dialog.querySelector("#cmsg"), async () => {
      await connectInjected(b.dataset.uuid as string);
      done();
    })),
  );
  dialog.querySelector("[data-test=demo]")?.addEventListener("click", (e) =>
    busy(e.target as HTMLButtonElement, dialog.querySelector("#cmsg"), async () => {
      await connectDemo();
      done();
    }),
  );
}

onStatus((mode, block) => {
  liveText = mode === "idle" ? "" : `● live (${mode === "stream" ? "stream" : "polling"})${block ? ` · block ${block}` : ""}`;
  const el = document.getElementById("livestate");
  if (el) el.textContent = liveText;
});

onWalletChange(() => {
  renderWallet().catch((e) => banner(errorBox(e)));
});
window.addEventListener("hashchange", route);

async function start(): Promise<void> {
  route();
  demo = await demoAvailable();
  // EIP-6963 wallets announce themselves at once; give them a moment before restoring.
  await new Promise((r) => setTimeout(r, 50));
  await restore();
  await renderWallet();
}
start().catch((e) => banner(errorBox(e)));
