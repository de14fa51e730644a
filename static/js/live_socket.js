// A page's live websocket, shared by the chat (chat.js) and the reviewer queue (review.js):
// the status line, reconnecting with jittered exponential backoff, and "Live" only once the
// page has caught up on what it missed.
//
// The page's own script keeps what the messages mean; this file never touches them, and writes
// only its own fixed words into the status line (textContent, never innerHTML).
//
// Load it before the page's script (both with `defer`, which keeps their order):
//   const live = window.AnviaLiveSocket.open({
//     path: "/ws/…/",                 // the socket's path on this host
//     status: element,                // gets data-state (connecting, live, offline, stopped) and a line of text
//     catchUp: async () => {},        // fetches what was missed; awaited on every open before "Live"
//     onMessage: (message) => {},     // each message, parsed from JSON; unparsable ones are dropped
//     stillAllowed: async () => true, // asked before each retry: false stops for good
//     stoppedText: "…",               // shown when stillAllowed says no
//   });
//   live.isOpen();
(function () {
  "use strict";

  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;

  function socketUrl(path) {
    return (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + path;
  }

  function open({ path, status, catchUp, onMessage, stillAllowed, stoppedText }) {
    const url = socketUrl(path);
    let socket = null;
    let attempt = 0;

    function setStatus(state, text) {
      status.dataset.state = state;
      status.textContent = text;
    }

    // A socket refused by the server (signed out, permission or object gone) fails just like a
    // network error, so the page is asked before each retry instead of retrying forever.
    function scheduleReconnect() {
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.75 + Math.random() * 0.5);
      attempt += 1;
      setStatus("offline", "Live updates interrupted. Reconnecting in " + Math.ceil(delay / 1000) + "\u00a0s\u2026");
      window.setTimeout(async () => {
        if (await stillAllowed()) {
          connect();
        } else {
          setStatus("stopped", stoppedText);
        }
      }, delay);
    }

    function connect() {
      setStatus("connecting", attempt === 0 ? "Connecting to live updates\u2026" : "Reconnecting\u2026");
      let ws;
      try {
        ws = new WebSocket(url);
      } catch {
        scheduleReconnect();
        return;
      }
      socket = ws;
      ws.addEventListener("open", async () => {
        attempt = 0;
        await catchUp();
        // "Live" means up to date: set only once the catch-up is in.
        if (socket === ws) setStatus("live", "Live");
      });
      ws.addEventListener("message", (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        onMessage(message);
      });
      ws.addEventListener("close", () => {
        if (socket !== ws) return;
        socket = null;
        scheduleReconnect();
      });
    }

    connect();
    return {
      isOpen() {
        return socket !== null && socket.readyState === WebSocket.OPEN;
      },
    };
  }

  window.AnviaLiveSocket = Object.freeze({ open });
})();
