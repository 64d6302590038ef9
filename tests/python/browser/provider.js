// A test wallet: an EIP-1193 provider announced by EIP-6963, forwarding JSON-RPC to anvil and
// signing with one of anvil's unlocked accounts. window.__wallet lets a test reject a signature
// or a transaction, or put the wallet on another chain.
(() => {
  const RPC = "__RPC__";
  const account = "__ACCOUNT__";
  const listeners = {};
  const emit = (event, value) => (listeners[event] || []).forEach((f) => f(value));
  const w = (window.__wallet = { reject: null, chainId: "__CHAIN__", switchable: true, calls: [] });
  const refuse = () => Object.assign(new Error("User rejected the request."), { code: 4001 });
  async function rpc(method, params) {
    const response = await fetch(RPC, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
    const reply = await response.json();
    if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code, data: reply.error.data });
    return reply.result;
  }
  const provider = {
    async request({ method, params = [] }) {
      w.calls.push(method);
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [account];
      if (method === "eth_chainId") return w.chainId;
      if (method === "wallet_switchEthereumChain") {
        if (!w.switchable) throw refuse();
        w.chainId = params[0].chainId;
        emit("chainChanged", w.chainId);
        return null;
      }
      if (method === "personal_sign" && w.reject === "sign") throw refuse();
      if (method === "eth_sendTransaction" && w.reject === "tx") throw refuse();
      return rpc(method, params);
    },
    on(event, f) { (listeners[event] = listeners[event] || []).push(f); },
    removeListener(event, f) { listeners[event] = (listeners[event] || []).filter((x) => x !== f); },
  };
  const info = { uuid: "6f1c6a52-3c1b-4b7e-9a51-2f7d1c1e0001", name: "Test Wallet", icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E", rdns: "org.tandem.testwallet" };
  const announce = () => window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();
})();
