// The live-data layer: one place that tells a page to read again when something it shows may
// have changed. It uses the API's WebSocket stream (`/v1/stream`: subscribe to topics such as
// `follower:0x…` or `master:0x…`; `added` and `removed` messages) when the server offers it, and
// otherwise polls the cheap `/readyz` every POLL_MS for the indexer's final block, asking the
// page to read again when it moved. Pages never know which one runs.
import { get, type Readiness } from "./api";

export const POLL_MS = 500;
export type Mode = "stream" | "polling" | "idle";

let streamUnavailable = false;
let mode: Mode = "idle";
let lastBlock = 0;
const statusListeners = new Set<(mode: Mode, block: number) => void>();

export function onStatus(fn: (mode: Mode, block: number) => void): void {
  statusListeners.add(fn);
  fn(mode, lastBlock);
}
function status(next: Mode, block = lastBlock): void {
  mode = next;
  lastBlock = block;
  statusListeners.forEach((fn) => fn(mode, lastBlock));
}

/** Calls ``onChange`` whenever data of ``topics`` may have changed; returns the unsubscriber. */
export function watch(topics: string[], onChange: () => void): () => void {
  let stopped = false;
  let stop: () => void = () => {};
  const start = () => {
    if (stopped) return;
    stop = streamUnavailable ? poll(onChange) : stream(topics, onChange, () => {
      streamUnavailable = true;
      start();
    });
  };
  start();
  return () => {
    stopped = true;
    stop();
  };
}

function stream(topics: string[], onChange: () => void, unavailable: () => void): () => void {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
  let socket: WebSocket;
  try {
    socket = new WebSocket(url);
  } catch {
    unavailable();
    return () => {};
  }
  let subscribed = false;
  let closedByUs = false;
  let cursor: string | undefined;
  let timer: number | undefined;
  socket.onopen = () => socket.send(JSON.stringify({ type: "subscribe", topics, cursor }));
  socket.onmessage = (message) => {
    const data = JSON.parse(String(message.data));
    if (data.cursor) cursor = data.cursor;
    if (data.type === "subscribed") {
      subscribed = true;
      status("stream");
    } else if (data.type === "added" || data.type === "removed" || data.type === "reset") {
      // A burst of events (one block's) is read once.
      window.clearTimeout(timer);
      timer = window.setTimeout(onChange, 50);
      status("stream", data.event?.block_number ?? lastBlock);
    }
  };
  socket.onclose = () => {
    if (closedByUs) return;
    if (!subscribed) unavailable(); // no stream on this server: poll instead
    else window.setTimeout(() => !closedByUs && Object.assign(socket, stream(topics, onChange, unavailable)), 1000);
  };
  return () => {
    closedByUs = true;
    window.clearTimeout(timer);
    socket.close();
  };
}

function poll(onChange: () => void): () => void {
  let seen = lastBlock;
  let active = true;
  status("polling");
  const tick = async () => {
    if (!active) return;
    try {
      const ready = await get<Readiness>("/readyz");
      if (ready.final_block !== seen) {
        seen = ready.final_block;
        status("polling", seen);
        onChange();
      }
    } catch {
      /* not ready or offline: try again at the next tick */
    }
    if (active) window.setTimeout(tick, POLL_MS);
  };
  window.setTimeout(tick, POLL_MS);
  return () => {
    active = false;
  };
}
