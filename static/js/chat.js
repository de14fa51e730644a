// The chat page, made live: messages go through the API, the run is followed over the
// conversation's websocket (/ws/conversations/<id>/), and nothing needs a reload.
//
// Everything shown here (the customer's words, the model's answers, tool arguments, reviewers'
// reasons) is untrusted text: the DOM is built with createElement and textContent only, never
// innerHTML. The plain-words lines come from the server, so live and reloaded pages read alike.
(function () {
  "use strict";

  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  if (!log || !form) return;
  const turnsList = document.getElementById("turns");
  const empty = document.getElementById("chat-empty");
  const input = form.querySelector("textarea");
  const sendButton = form.querySelector('button[type="submit"]');
  const formError = document.getElementById("chat-error");
  const title = document.getElementById("chat-title");
  const statusTexts = JSON.parse(document.getElementById("chat-status-texts").textContent);

  const postUrl = log.dataset.postUrl;
  const conversationUrl = log.dataset.conversationUrl;
  const runUrlTemplate = log.dataset.runUrl;
  // Staff also see a failed run's technical detail (the runs API returns it to them only).
  const showRunErrors = log.dataset.showRunErrors === "true";

  const FINISHED = new Set(["succeeded", "failed", "stopped"]);
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const KIND = /^[a-z_]+$/;
  const EARLY_RUNS_KEPT = 20;
  const TITLE_CHARS = 80;

  let live = null;
  // Messages for runs this page has no turn for yet: the worker can be faster than the answer
  // to our own POST, which is what tells us the run's id.
  const early = new Map();
  // Per run, one list per catch-up fetch in flight: what the socket said meanwhile, replayed on
  // top of the fetch's result.
  const heardDuringCatchUp = new Map();

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function runId(value) {
    const id = String(value || "");
    return UUID.test(id) ? id.toLowerCase() : null;
  }

  function turnFor(id) {
    for (const turn of turnsList.children) {
      if (turn.dataset.runId === id) return turn;
    }
    return null;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 160;
  }

  function keepInView(wasNearBottom) {
    if (wasNearBottom) window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  function showFormError(text) {
    formError.textContent = text || "";
    formError.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  // ---- One turn: the customer's message, the run's timeline, its status line, the answer ----

  function bubble(kind, who, text) {
    const node = element("div", null, "bubble " + kind);
    node.append(element("p", who, "who"), element("p", text, "text"));
    return node;
  }

  function buildTurn(id, question) {
    const turn = element("li", null, "turn");
    turn.dataset.runId = id;
    turn.dataset.status = "queued";
    turn.append(bubble("customer", "You", question));
    const timeline = element("ol", null, "timeline");
    timeline.setAttribute("aria-label", "What the agent did");
    turn.append(timeline);
    turn.append(element("p", statusTexts.queued, "run-status"));
    return turn;
  }

  function isFinished(turn) {
    return FINISHED.has(turn.dataset.status);
  }

  function setRunStatus(turn, status) {
    turn.dataset.status = status;
    const line = turn.querySelector(".run-status");
    const text = FINISHED.has(status) ? "" : statusTexts[status] || "";
    line.textContent = text;
    line.hidden = !text;
  }

  // A resumed run announces its pending calls again: one line per key (as the server renders it).
  function addStep(turn, item) {
    if (!item || typeof item.text !== "string") return;
    const kind = KIND.test(String(item.kind)) ? item.kind : "note";
    const timeline = turn.querySelector(".timeline");
    const key = typeof item.key === "string" ? item.key : "";
    if (key && Array.from(timeline.children).some((line) => line.dataset.key === key)) return;
    const line = element("li", item.text, "step " + kind);
    if (key) line.dataset.key = key;
    timeline.append(line);
  }

  // The answer as the model writes it: pieces (text_delta events, never saved) grow a draft
  // bubble, which the final answer replaces on run.finished. Text the model wrote beside tool
  // calls becomes a timeline note (its "text" event), so its draft goes.
  function grow(turn, data) {
    const piece = data && typeof data.text === "string" ? data.text : "";
    if (!piece) return;
    let draft = turn.querySelector(".bubble.agent.draft");
    if (!draft) {
      draft = bubble("agent draft", "Agent", "");
      draft.setAttribute("aria-busy", "true");
      turn.append(draft);
      if (turn.dataset.status === "queued") setRunStatus(turn, "running");
    }
    draft.querySelector(".text").textContent += piece;
  }

  function dropDraft(turn) {
    const draft = turn.querySelector(".bubble.agent.draft");
    if (draft) draft.remove();
  }

  function finish(turn, status, text) {
    const finalStatus = FINISHED.has(status) ? status : "succeeded";
    setRunStatus(turn, finalStatus);
    const previous = turn.querySelector(".bubble.agent");
    if (previous) previous.remove();
    const answer = bubble("agent" + (finalStatus !== "succeeded" ? " failed" : ""), "Agent", text || "");
    turn.append(answer);
    if (finalStatus === "failed" && showRunErrors) showRunError(turn);
  }

  async function showRunError(turn) {
    let run = null;
    try {
      const response = await fetch(runUrl(turn.dataset.runId), { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) run = await response.json();
    } catch {
      run = null;
    }
    if (!run || typeof run.error !== "string" || !run.error || turn.querySelector(".staff-error")) return;
    const details = element("details", "", "staff-error");
    details.append(element("summary", "Technical detail (shown to staff only)"), element("pre", run.error));
    turn.append(details);
  }

  function runUrl(id) {
    return runUrlTemplate.replace("00000000-0000-0000-0000-000000000000", id);
  }

  function apply(turn, message) {
    const wasNearBottom = nearBottom();
    if (message.type === "run.finished") {
      finish(turn, message.status, message.text);
    } else if (isFinished(turn)) {
      return; // a late event of a run whose answer is already shown
    } else if (message.type === "run.event" && message.event === "text_delta") {
      grow(turn, message.data);
    } else if (message.type === "run.event") {
      if (message.event === "text" && !(message.data && message.data.final)) dropDraft(turn);
      addStep(turn, message.item);
      if (message.event === "approval_requested") setRunStatus(turn, "waiting_for_approval");
      else if (message.event === "approval_decided") setRunStatus(turn, "running");
    } else if (message.type === "run.suspended") {
      setRunStatus(turn, "suspended");
    }
    keepInView(wasNearBottom);
  }

  function handle(message) {
    if (!message || typeof message !== "object") return;
    const id = runId(message.run_id);
    if (id === null) return;
    for (const heard of heardDuringCatchUp.get(id) || []) heard.push(message);
    const turn = turnFor(id);
    if (turn === null) {
      // Runs started from another tab never get a turn here; keep the buffer small.
      if (!early.has(id) && early.size >= EARLY_RUNS_KEPT) early.delete(early.keys().next().value);
      if (!early.has(id)) early.set(id, []);
      early.get(id).push(message);
      return;
    }
    apply(turn, message);
  }

  // ---- Catching up: what happened while the socket was not listening ----

  // Key order is not kept by the database (PostgreSQL's jsonb), so compare canonically.
  function canonical(value) {
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map((key) => JSON.stringify(key) + ":" + canonical(value[key])).join(",") + "}";
    }
    return JSON.stringify(value === undefined ? null : value);
  }

  function signature(type, data) {
    return type + "\u0000" + canonical(data === undefined ? {} : data);
  }

  async function catchUp(turn) {
    const id = turn.dataset.runId;
    const heard = [];
    if (!heardDuringCatchUp.has(id)) heardDuringCatchUp.set(id, new Set());
    heardDuringCatchUp.get(id).add(heard);
    let run = null;
    try {
      const response = await fetch(runUrl(id), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.ok) run = await response.json();
    } catch {
      run = null;
    }
    heardDuringCatchUp.get(id).delete(heard);
    if (heardDuringCatchUp.get(id).size === 0) heardDuringCatchUp.delete(id);
    if (!run || !Array.isArray(run.events)) return;
    // The socket finished the turn while this read was on its way: the read is older than the page.
    if (isFinished(turn) && !FINISHED.has(run.status)) return;

    const wasNearBottom = nearBottom();
    const timeline = turn.querySelector(".timeline");
    timeline.replaceChildren();
    const recorded = new Set();
    for (const event of run.events) {
      recorded.add(signature(event.type, event.data));
      if (event.text) addStep(turn, { kind: event.kind, text: event.text, key: event.key });
    }
    if (FINISHED.has(run.status)) finish(turn, run.status, run.answer);
    else setRunStatus(turn, String(run.status));
    // Whatever the socket said after the server read the run still counts.
    for (const message of heard) {
      // Pieces of the answer were shown when they arrived (and are never recorded): once is enough.
      if (message.type === "run.event" && message.event === "text_delta") continue;
      if (message.type === "run.event" && recorded.has(signature(message.event, message.data))) continue;
      apply(turn, message);
    }
    keepInView(wasNearBottom);
  }

  function catchUpAll() {
    const unfinished = Array.from(turnsList.children).filter((turn) => turn.dataset.runId && !isFinished(turn));
    return Promise.all(unfinished.map(catchUp));
  }

  // ---- Sending ----

  function csrfToken() {
    for (const part of document.cookie.split(";")) {
      const [name, ...rest] = part.trim().split("=");
      if (name === "csrftoken") return decodeURIComponent(rest.join("="));
    }
    const field = form.querySelector('input[name="csrfmiddlewaretoken"]');
    return field ? field.value : "";
  }

  function firstError(body) {
    if (!body || typeof body !== "object") return "";
    if (Array.isArray(body.content) && body.content.length) return String(body.content[0]);
    if (typeof body.detail === "string") return body.detail;
    return "";
  }

  function failureText(status, body) {
    if (status === 400) return firstError(body) || "The message could not be sent. Check it and try again.";
    if (status === 401 || status === 403) return "Your session has ended. Reload the page and sign in again.";
    if (status === 404) return "This conversation no longer exists.";
    // The server's sentence: "the agent is still answering…", "…too quickly. Wait 12 seconds…".
    if (status === 409) return firstError(body) || "The agent is still answering your last message. Wait for its answer.";
    if (status === 429) return firstError(body) || "You are sending messages too quickly. Wait a minute, then try again.";
    if (status === 413) return "The message is too large to send.";
    return "The message could not be sent (the server answered " + status + "). Try again in a moment.";
  }

  function addTurn(id, question) {
    const turn = buildTurn(id, question);
    turnsList.append(turn);
    empty.hidden = true;
    for (const message of early.get(id) || []) apply(turn, message);
    early.delete(id);
    keepInView(true);
    // A socket that is down now would miss the run's start; the fetch fills that in.
    if (!live.isOpen()) catchUp(turn);
  }

  // The server names an untitled conversation after its first message; so does the page.
  function nameAfterFirstMessage(text) {
    if (!title || !title.hasAttribute("data-untitled")) return;
    title.removeAttribute("data-untitled");
    title.textContent = Array.from(text).slice(0, TITLE_CHARS).join("");
    document.title = title.textContent + " \u00b7 Anvia";
  }

  async function send(event) {
    event.preventDefault();
    if (sendButton.disabled) return;
    const content = input.value;
    sendButton.disabled = true;
    showFormError("");
    try {
      let response;
      try {
        response = await fetch(postUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
          body: JSON.stringify({ content }),
        });
      } catch {
        showFormError("The message could not be sent: the connection failed. Check your network and try again.");
        return;
      }
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      const id = body ? runId(body.run_id) : null;
      if (response.status !== 202 || id === null) {
        showFormError(failureText(response.status, body));
        return;
      }
      input.value = "";
      addTurn(id, content.trim());
      nameAfterFirstMessage(content.trim());
    } finally {
      sendButton.disabled = false;
      input.focus();
    }
  }

  // ---- Live updates (live_socket.js) ----

  // A socket refused for a signed-out user or a missing conversation fails like a network error
  // does; ask the API before retrying forever.
  async function stillAllowed() {
    try {
      const response = await fetch(conversationUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      return !(response.status === 401 || response.status === 403 || response.status === 404);
    } catch {
      return true;
    }
  }

  form.addEventListener("submit", send);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  // The limit is the server's (in characters, as Python counts them: code points, not UTF-16 units).
  // The count shows from 90 % of it; past it, the message says by how much and Send stays off.
  const maxChars = Number(input.dataset.maxChars) || 0;
  const counter = document.getElementById("char-count");

  function overLimitText(length) {
    const over = length - maxChars;
    return "Your message is " + length.toLocaleString("en-US") + " characters, " + over.toLocaleString("en-US") +
      " over the " + maxChars.toLocaleString("en-US") + " limit. Shorten it to send.";
  }

  function countCharacters() {
    if (!maxChars || !counter) return 0;
    const length = Array.from(input.value.trim()).length;
    const near = length >= maxChars * 0.9;
    counter.hidden = !near;
    counter.textContent = near ? length.toLocaleString("en-US") + " / " + maxChars.toLocaleString("en-US") : "";
    counter.classList.toggle("over", length > maxChars);
    return length;
  }

  form.addEventListener("submit", (event) => {
    const length = countCharacters();
    if (maxChars && length > maxChars) {
      event.preventDefault();
      event.stopImmediatePropagation();
      showFormError(overLimitText(length));
    }
  }, true);

  input.addEventListener("input", () => {
    const length = countCharacters();
    if (maxChars && length > maxChars) showFormError(overLimitText(length));
    else if (!formError.hidden) showFormError("");
  });
  countCharacters();
  window.scrollTo({ top: document.documentElement.scrollHeight });
  live = window.AnviaLiveSocket.open({
    path: log.dataset.socketPath,
    status: document.getElementById("live-status"),
    catchUp: catchUpAll,
    onMessage: handle,
    stillAllowed,
    stoppedText: "Live updates stopped: you are signed out or this conversation is gone. Reload the page.",
  });
})();
