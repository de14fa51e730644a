// Anvia Studio: chats, run timelines and the approvals panel, kept live by server-sent events.
//
// Every message, argument, reason and result comes from a model or a person, so it is untrusted
// text: the DOM is built with createElement and textContent only, never innerHTML. The server's
// events only say what changed; the page then reads it again, so a missed event costs nothing.
(function () {
  "use strict";

  const token = document.querySelector('meta[name="studio-token"]').content;

  const liveStatus = document.getElementById("live-status");
  const agentList = document.getElementById("agents");
  let agentButtons = [];
  const actAs = document.getElementById("act-as");
  const actAsField = document.getElementById("act-as-field");
  const chatList = document.getElementById("chats");
  const chatsEmpty = document.getElementById("chats-empty");
  const chatTitle = document.getElementById("chat-title");
  const chatMeta = document.getElementById("chat-meta");
  const timeline = document.getElementById("timeline");
  const intro = document.getElementById("chat-intro");
  const composer = document.getElementById("composer");
  const messageBox = document.getElementById("message");
  const sendButton = document.getElementById("send");
  const composerError = document.getElementById("composer-error");
  const composerHint = document.getElementById("composer-hint");
  const pendingList = document.getElementById("pending");
  const pendingEmpty = document.getElementById("pending-empty");
  const approvalCount = document.getElementById("approval-count");
  const recentList = document.getElementById("recent");
  const recentEmpty = document.getElementById("recent-empty");

  const OPEN = new Set(["running", "waiting_for_approval"]);
  const STATUS_TEXT = {
    running: "working",
    waiting_for_approval: "waiting for approval",
    stopped: "stopped",
    succeeded: "done",
    failed: "failed",
  };
  // Short words for the narrow chat list.
  const STATUS_SHORT = Object.assign({}, STATUS_TEXT, { waiting_for_approval: "waiting" });
  const agents = new Map(); // filled from /api/studio
  let users = [];

  const state = {
    agent: null, // the agent a new chat will talk to
    chatId: null, // the open chat; null while composing a new one
    chat: null,
    chats: [],
    sending: false,
  };
  // Each read is numbered, so a slow answer never overwrites a newer one.
  const latest = { chats: 0, chat: 0, approvals: 0 };

  // ---------------------------------------------------------------- small helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function append(parent, ...children) {
    for (const child of children) if (child) parent.appendChild(child);
    return parent;
  }

  function pretty(value) {
    if (typeof value === "string") return value;
    try {
      return JSON.stringify(value, null, 2);
    } catch (error) {
      return String(value);
    }
  }

  function clock(iso) {
    const when = iso ? new Date(iso) : null;
    if (!when || Number.isNaN(when.getTime())) return "";
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function badge(status, words) {
    return el("span", "badge status-" + status, (words || STATUS_TEXT)[status] || status);
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {}, credentials: "same-origin" }, options || {});
    if (init.body !== undefined) {
      init.method = init.method || "POST";
      init.headers["Content-Type"] = "application/json";
      init.headers["X-Studio-Token"] = token;
      init.body = JSON.stringify(init.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new Error("Studio is not answering. Is it still running?");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error ? data.error : "Studio refused that (HTTP " + response.status + "). Reload the page.";
      const failure = new Error(message);
      failure.status = response.status;
      throw failure;
    }
    return data;
  }

  // ---------------------------------------------------------------- agents and chats

  function selectedUser() {
    const option = actAs.selectedOptions[0];
    if (!option) return null;
    return users[Number(option.value)] || null;
  }

  // ---------------------------------------------------------------- what Studio serves

  function agentCard(agent) {
    const card = el("li", "agent-card");
    const button = el("button", "agent");
    button.type = "button";
    button.dataset.agent = agent.name;
    button.setAttribute("aria-pressed", "false");
    append(button, el("span", "agent-name", agent.name), el("span", "agent-model", agent.model));
    if (agent.description) button.appendChild(el("span", "agent-desc", agent.description));
    button.addEventListener("click", () => pickAgent(agent.name));
    const tools = el("ul", "tools");
    tools.setAttribute("aria-label", "Tools of " + agent.name);
    for (const tool of agent.tools) {
      const item = el("li");
      item.title = tool.description || "";
      item.appendChild(el("code", null, tool.name));
      const rule = {
        always: ["rule rule-always", "always asks", "Every call waits for your decision."],
        rule: ["rule rule-when", "asks if rule holds", "A call waits for your decision when the tool's approval rule says so."],
        none: ["rule rule-none", "runs freely", "No approval metadata: calls run at once."],
      }[tool.approval] || ["rule", tool.approval, ""];
      const tag = el("span", rule[0], rule[1]);
      tag.title = rule[2];
      item.appendChild(tag);
      tools.appendChild(item);
    }
    if (!agent.tools.length) tools.appendChild(el("li", "empty small", "no tools"));
    return append(card, button, tools);
  }

  function showStudio(data) {
    for (const agent of data.agents) agents.set(agent.name, agent);
    agentList.replaceChildren(...data.agents.map(agentCard));
    agentButtons = [...agentList.querySelectorAll("button.agent")];
    users = data.users;
    actAs.replaceChildren(
      ...users.map((user, index) => {
        const option = el("option", null, user.label + (user.note ? " (" + user.note + ")" : ""));
        option.value = String(index);
        return option;
      }),
    );
    actAsField.hidden = users.length === 0;
    const reviewer = document.getElementById("reviewer");
    append(reviewer, document.createTextNode("You decide as "), el("strong", null, data.reviewer));
    const notice = document.getElementById("notice");
    notice.textContent = data.notice;
    notice.hidden = !data.notice;
    document.getElementById("intro-store").textContent = "Approval requests are kept " + data.store + ".";
  }

  function pickAgent(name) {
    state.agent = name;
    state.chatId = null;
    state.chat = null;
    history.replaceState(null, "", "#new-" + encodeURIComponent(name));
    render();
    messageBox.focus();
  }

  async function openChat(id) {
    state.chatId = id;
    state.agent = null;
    history.replaceState(null, "", "#chat-" + id);
    render();
    await refreshChat();
  }

  async function refreshChats() {
    const ticket = ++latest.chats;
    const data = await api("/api/chats");
    if (ticket !== latest.chats) return;
    state.chats = data.chats;
    renderChatList();
  }

  async function refreshChat() {
    if (state.chatId === null) return;
    const ticket = ++latest.chat;
    const id = state.chatId;
    let data;
    try {
      data = await api("/api/chats/" + id);
    } catch (error) {
      if (ticket !== latest.chat) return;
      if (error.status === 404) {
        // A chat of an earlier Studio (they live in its memory): start afresh.
        state.chatId = null;
        state.chat = null;
        history.replaceState(null, "", "#");
        render();
      } else {
        showComposerError(error.message);
      }
      return;
    }
    if (ticket !== latest.chat || state.chatId !== id) return;
    state.chat = data.chat;
    render();
  }

  function renderChatList() {
    chatList.replaceChildren();
    for (const chat of state.chats) {
      const item = el("li");
      const button = el("button", "chat-link");
      button.type = "button";
      button.dataset.chatId = chat.id;
      if (chat.id === state.chatId) button.setAttribute("aria-current", "true");
      const top = append(el("span", "chat-link-top"), el("span", "chat-link-title", chat.title || "Chat #" + chat.id));
      if (chat.pending_approvals) {
        top.appendChild(el("span", "count small", chat.pending_approvals));
      }
      append(
        button,
        top,
        append(
          el("span", "chat-link-meta"),
          el("span", "chat-link-who", chat.agent + (chat.user ? " · as " + chat.user : "")),
          badge(chat.status, STATUS_SHORT),
        ),
      );
      button.addEventListener("click", () => openChat(chat.id));
      chatList.appendChild(append(item, button));
    }
    chatsEmpty.hidden = state.chats.length > 0;
  }

  // ---------------------------------------------------------------- the open chat

  function render() {
    for (const button of agentButtons) {
      const chosen = state.chatId === null && button.dataset.agent === state.agent;
      button.setAttribute("aria-pressed", chosen ? "true" : "false");
    }
    for (const button of chatList.querySelectorAll("button.chat-link")) {
      if (Number(button.dataset.chatId) === state.chatId) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    const chat = state.chat;
    if (state.chatId !== null && chat) {
      chatTitle.textContent = chat.title || "Chat #" + chat.id;
      const agent = agents.get(chat.agent);
      const who = chat.user ? " · acting as " + chat.user : "";
      chatMeta.replaceChildren(
        el("span", null, chat.agent + (agent ? " · " + agent.model : "") + who + " · "),
        badge(chat.status),
      );
      renderTimeline(chat);
    } else if (state.chatId !== null) {
      chatTitle.textContent = "Loading…";
      chatMeta.replaceChildren();
    } else if (state.agent) {
      const user = selectedUser();
      const agent = agents.get(state.agent);
      chatTitle.textContent = "New chat with " + state.agent;
      chatMeta.textContent = (agent ? agent.model : "") + (user ? " · acting as " + user.label : "");
      timeline.replaceChildren();
    } else {
      chatTitle.textContent = "Pick an agent to start a chat";
      chatMeta.textContent = "";
      timeline.replaceChildren();
    }
    intro.hidden = state.chatId !== null;
    updateComposer();
  }

  function updateComposer() {
    const chat = state.chat;
    let cannotType = "";
    if (state.chatId === null && !state.agent) cannotType = "Pick an agent first";
    else if (state.chatId === null && users.length && !selectedUser()) cannotType = "Choose who to act as first";
    else if (state.chatId !== null && !chat) cannotType = "Loading…";
    let cannotSend = cannotType;
    if (!cannotSend && chat && OPEN.has(chat.status)) {
      cannotSend =
        chat.status === "waiting_for_approval"
          ? "The agent is waiting for your decision in the Approvals panel."
          : "The agent is still working on your last message.";
    }
    messageBox.disabled = Boolean(cannotType);
    messageBox.placeholder =
      cannotType || "Message " + (chat ? chat.agent : state.agent) + " (Enter sends, Shift+Enter adds a line)";
    sendButton.disabled = Boolean(cannotSend) || state.sending;
    composerHint.textContent = cannotSend && !cannotType ? cannotSend : "";
  }

  function renderTimeline(chat) {
    const nearBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 80;
    timeline.replaceChildren(...chat.runs.map((run) => renderRun(run, chat)));
    if (nearBottom || state.scrollToEnd) {
      timeline.scrollTop = timeline.scrollHeight;
      state.scrollToEnd = false;
    }
  }

  function renderRun(run, chat) {
    const item = el("li", "turn");
    item.dataset.runId = run.id;
    item.dataset.status = run.status;
    const asked = el("div", "bubble from-user");
    append(asked, el("span", "who", chat.user || "you"), el("p", "text", run.message));
    item.appendChild(asked);
    const events = el("ol", "events");
    for (const event of run.events) {
      const node = renderEvent(event, chat);
      if (node) events.appendChild(node);
    }
    item.appendChild(events);
    if (OPEN.has(run.status)) item.appendChild(runProgress(run));
    return item;
  }

  function runProgress(run) {
    const note = el("p", "progress");
    if (run.status === "waiting_for_approval") {
      const pending = run.events
        .filter((event) => event.type === "approval_requested" && event.approval && event.approval.status === "pending")
        .map((event) => "#" + event.approval.id);
      note.classList.add("waiting");
      note.textContent =
        "Waiting for approval " + pending.join(", ") + ": decide in the Approvals panel.";
    } else {
      note.classList.add("working");
      note.textContent = "Working…";
    }
    return note;
  }

  function eventItem(kind, title) {
    const item = el("li", "event event-" + kind);
    const head = el("div", "event-head");
    if (title instanceof Node) head.appendChild(title);
    else head.textContent = title;
    item.appendChild(head);
    return item;
  }

  function codeTitle(before, name, after) {
    const span = el("span");
    append(span, document.createTextNode(before), el("code", null, name), document.createTextNode(after || ""));
    return span;
  }

  // What a decision did, in words: the record's action says more than its status (respond and
  // terminate are "rejected" calls too).
  const ACTION_TEXT = {
    approve: "approved",
    reject: "rejected",
    respond: "answered instead of the tool",
    terminate: "run stopped",
  };

  // For badges, which must stay short.
  const ACTION_SHORT = { approve: "approved", reject: "rejected", respond: "responded", terminate: "run stopped" };

  function approvalBadge(approval) {
    const action = approval.status !== "pending" ? approval.action : "";
    const className = action === "respond" || action === "terminate" ? "action-" + action : "status-" + approval.status;
    return el("span", "badge " + className, ACTION_SHORT[action] || approval.status);
  }

  function decisionText(approval) {
    if (!approval) return "";
    const done = (approval.status !== "pending" && ACTION_TEXT[approval.action]) || approval.status;
    const edited = approval.action === "approve" && approval.edited_args ? " with edited arguments" : "";
    const who = approval.decided_by ? " by " + approval.decided_by : "";
    const said = approval.action === "respond" ? approval.response : approval.decision_reason;
    const why = said ? ": “" + said + "”" : "";
    return done + edited + who + why;
  }

  // A tool's preview: warnings first (what would go wrong), then each fact under its label.
  function factText(value) {
    if (value === true) return "yes";
    if (value === false) return "no";
    if (value === null || value === undefined) return "—";
    if (Array.isArray(value) && value.every((item) => typeof item === "string")) return value.join("; ") || "none";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function factLabel(key) {
    const words = String(key).replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1).toLowerCase();
  }

  // ToolCall.preview()'s shape: {"warnings": [...], "facts": [{"name", "value"}, ...]} in the tool's order.
  function renderPreview(preview, options) {
    if (!preview || typeof preview !== "object") return null;
    const box = el("div", "preview");
    const raw = preview.warnings;
    const warnings = Array.isArray(raw) ? raw : raw ? [raw] : [];
    if (warnings.length) {
      const list = el("ul", "preview-warnings");
      list.setAttribute("aria-label", "Warnings");
      for (const warning of warnings) list.appendChild(el("li", null, String(warning)));
      box.appendChild(list);
    }
    const facts = Array.isArray(preview.facts) ? preview.facts.filter((fact) => fact && typeof fact === "object") : [];
    if (facts.length && !(options && options.warningsOnly)) {
      const list = el("dl", "preview-facts");
      for (const fact of facts) append(list, el("dt", null, factLabel(fact.name)), el("dd", null, factText(fact.value)));
      box.appendChild(list);
    }
    return box.childNodes.length ? box : null;
  }

  function renderEvent(event, chat) {
    const data = event.data || {};
    switch (event.type) {
      case "step": {
        return eventItem("step", "Step " + data.step + " · asked " + (data.model || "the model"));
      }
      case "tool_call": {
        const item = eventItem("tool-call", codeTitle("Tool call ", data.tool_name));
        if (data.requires_approval) item.firstChild.appendChild(el("span", "tag warn", "needs approval"));
        item.appendChild(el("pre", "args", pretty(data.args)));
        return item;
      }
      case "approval_requested": {
        const approval = event.approval;
        const item = eventItem(
          "approval",
          codeTitle("Approval " + (approval ? "#" + approval.id + " " : "") + "requested for ", data.tool_name),
        );
        if (approval) {
          item.dataset.approvalId = approval.id;
          if (approval.status !== "pending") item.classList.add("settled");
          item.firstChild.appendChild(approvalBadge(approval));
        }
        item.appendChild(el("p", "reason", data.reason));
        // While it waits, the timeline repeats the preview's warnings; the card has the whole preview.
        if (approval && approval.status === "pending") {
          const warnings = renderPreview(approval.preview, { warningsOnly: true });
          if (warnings) item.appendChild(warnings);
        }
        return item;
      }
      case "approval_decided": {
        const approval = event.approval;
        const action = data.action || (data.approved === true ? "approve" : "reject");
        const kind = { approve: "approved", respond: "responded", terminate: "terminated" }[action] || "rejected";
        const words = {
          approve: "Approved",
          reject: "Not approved",
          respond: "Answered instead of the tool",
          terminate: "Run stopped",
        };
        const item = eventItem("decided " + kind, words[action] || "Not approved");
        item.dataset.action = action;
        if (approval) item.firstChild.textContent = "#" + approval.id + " " + decisionText(approval);
        return item;
      }
      case "tool_result": {
        if (data.outcome === "ran") {
          const item = eventItem("result", codeTitle("Result of ", data.tool_name));
          item.appendChild(el("pre", "result", pretty(data.result)));
          if (data.message) item.appendChild(el("p", "note", data.message));
          return item;
        }
        const failed = data.outcome === "error" || data.outcome === "invalid";
        const said = failed
          ? " failed; the model received:"
          : data.outcome === "responded"
            ? " did not run; the model received the reviewer's answer:"
            : " did not run; the model received:";
        const item = eventItem(
          failed ? "result failed" : data.outcome === "responded" ? "result responded" : "result skipped",
          codeTitle("", data.tool_name, said),
        );
        item.appendChild(el("blockquote", "model-received", data.content || data.message || ""));
        return item;
      }
      case "text": {
        if (data.final) {
          const bubble = el("li", "bubble from-agent");
          append(bubble, el("span", "who", chat.agent), el("p", "text", data.text));
          return bubble;
        }
        const item = eventItem("thought", "The model said");
        item.appendChild(el("p", "text", data.text));
        return item;
      }
      case "error": {
        const item = eventItem("error", "Run failed · " + (data.kind || "error"));
        item.appendChild(el("pre", "error-text", data.message));
        return item;
      }
      case "done": {
        const usage = data.usage || {};
        return eventItem("done", "Done · " + (usage.model_calls || 0) + " model call" + (usage.model_calls === 1 ? "" : "s"));
      }
      case "suspended":
        return eventItem("note", "Studio stopped while this run waited; its approval request was cancelled.");
      case "terminated": {
        const item = eventItem("stopped", "Run stopped by a reviewer: nothing more of it runs");
        if (data.message) item.appendChild(el("p", "stopped-text", data.message));
        return item;
      }
      default:
        return eventItem("note", event.type);
    }
  }

  function showComposerError(message) {
    composerError.textContent = message || "";
  }

  async function send(event) {
    event.preventDefault();
    const text = messageBox.value.trim();
    if (!text || sendButton.disabled) return;
    state.sending = true;
    updateComposer();
    showComposerError("");
    try {
      let data;
      if (state.chatId === null) {
        const user = selectedUser();
        data = await api("/api/chats", { body: { agent: state.agent, user_id: user ? user.id : null, message: text } });
        state.chatId = data.chat.id;
        state.agent = null;
        history.replaceState(null, "", "#chat-" + data.chat.id);
      } else {
        data = await api("/api/chats/" + state.chatId + "/messages", { body: { message: text } });
      }
      latest.chat++;
      state.chat = data.chat;
      state.scrollToEnd = true;
      messageBox.value = "";
      render();
      refreshChats().catch(() => {});
    } catch (error) {
      showComposerError(error.message);
    } finally {
      state.sending = false;
      updateComposer();
      if (!messageBox.disabled) messageBox.focus();
    }
  }

  // ---------------------------------------------------------------- approvals

  async function refreshApprovals() {
    const ticket = ++latest.approvals;
    const data = await api("/api/approvals");
    if (ticket !== latest.approvals) return;
    renderApprovals(data);
  }

  function renderApprovals(data) {
    // Cards stay in place while they are pending, so a reason being typed is never lost.
    const wanted = new Map(data.pending.map((approval) => [String(approval.id), approval]));
    for (const card of [...pendingList.children]) {
      if (!wanted.has(card.dataset.approvalId)) card.remove();
    }
    let previous = null;
    for (const approval of data.pending) {
      let card = pendingList.querySelector('li[data-approval-id="' + approval.id + '"]');
      if (!card) card = approvalCard(approval);
      const expectedPosition = previous ? previous.nextSibling : pendingList.firstChild;
      if (card !== expectedPosition) pendingList.insertBefore(card, expectedPosition);
      previous = card;
    }
    approvalCount.textContent = String(data.pending.length);
    approvalCount.dataset.count = String(data.pending.length);
    pendingEmpty.hidden = data.pending.length > 0;

    recentList.replaceChildren(...data.recent.map(recentItem));
    recentEmpty.hidden = data.recent.length > 0;
  }

  function approvalCard(approval) {
    const card = el("li", "approval-card");
    card.dataset.approvalId = approval.id;
    const head = el("div", "card-head");
    append(head, el("span", "card-id", "#" + approval.id), el("code", "card-tool", approval.tool_name));
    head.appendChild(el("span", "badge status-pending", "pending"));
    card.appendChild(head);

    const where = el("p", "card-meta");
    const asker = approval.requested_by ? " · asked by " + approval.requested_by : "";
    where.appendChild(document.createTextNode((approval.agent || "agent") + asker + " · "));
    if (approval.chat_id) {
      const link = el("button", "link", "open chat");
      link.type = "button";
      link.addEventListener("click", () => openChat(approval.chat_id));
      where.appendChild(link);
    }
    card.appendChild(where);
    card.appendChild(el("p", "card-reason", approval.reason));
    const preview = renderPreview(approval.preview);
    if (preview) card.appendChild(preview);
    card.appendChild(el("pre", "args", pretty(approval.args)));
    if (approval.reject_message) {
      card.appendChild(el("p", "card-reject-note", "If rejected, the model is told: “" + approval.reject_message + "”"));
    }

    const form = el("form", "decide");
    const reason = field(form, "textarea", "reason-" + approval.id, "Reason (optional)");
    reason.rows = 2;
    reason.maxLength = 2000;
    reason.placeholder = "Why? The model hears this if you reject.";
    // What "Respond" sends: folded away until wanted (Respond with it empty unfolds it).
    const answer = el("details", "respond");
    answer.appendChild(el("summary", null, "Answer instead of the tool"));
    const response = field(answer, "textarea", "response-" + approval.id, "What the model receives instead of the tool's result");
    response.rows = 2;
    response.maxLength = 10000;
    response.placeholder = "e.g. Already refunded by phone (RF-77).";
    form.appendChild(answer);

    const stop = button("terminate", "terminate", "Stop the run");
    const stopNote = el("p", "hint", "Stop the run ends it: nothing more of it runs and its other requests are cancelled.");
    stopNote.id = "stop-note-" + approval.id;
    stop.setAttribute("aria-describedby", stopNote.id);
    const buttons = [
      button("approve", "approve", "Approve"),
      button("reject", "reject", "Reject"),
      button("respond", "respond", "Respond"),
      stop,
    ];
    append(form, append(el("div", "buttons"), buttons[0], buttons[1]), append(el("div", "buttons"), buttons[2], stop), stopNote);

    const error = el("p", "form-error");
    error.setAttribute("role", "alert");
    form.appendChild(error);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const action = event.submitter ? event.submitter.value : "approve";
      if (action === "respond" && !response.value.trim()) {
        answer.open = true;
        error.textContent = "Write what the model should receive instead of the tool's result.";
        response.focus();
        return;
      }
      for (const each of buttons) each.disabled = true;
      error.textContent = "";
      try {
        const data = await api("/api/approvals/" + approval.id + "/decision", {
          body: { action: action, reason: reason.value, response: action === "respond" ? response.value : "" },
        });
        latest.approvals++;
        renderApprovals(data);
        refreshChat().catch(() => {});
      } catch (failure) {
        error.textContent = failure.message;
        for (const each of buttons) each.disabled = false;
        refreshApprovals().catch(() => {});
      }
    });
    card.appendChild(form);
    return card;
  }

  function field(parent, tag, id, text) {
    const label = el("label", null, text);
    label.htmlFor = id;
    const input = el(tag);
    input.id = id;
    append(parent, label, input);
    return input;
  }

  function button(className, value, text) {
    const node = el("button", className, text);
    node.type = "submit";
    node.value = value;
    return node;
  }

  function recentItem(approval) {
    const item = el("li", "recent-item");
    item.dataset.approvalId = approval.id;
    item.dataset.status = approval.status;
    if (approval.action) item.dataset.action = approval.action;
    const head = el("div", "card-head");
    append(head, el("span", "card-id", "#" + approval.id), el("code", "card-tool", approval.tool_name));
    head.appendChild(approvalBadge(approval));
    item.appendChild(head);
    item.appendChild(el("p", "card-reason", approval.reason));
    const who = (approval.decided_by ? "by " + approval.decided_by : "") + (approval.decided_at ? " at " + clock(approval.decided_at) : "");
    item.appendChild(el("p", "card-meta", who.trim()));
    if (approval.action === "respond" && approval.response) {
      item.appendChild(el("p", "card-decision", "The model received: “" + approval.response + "”"));
    }
    if (approval.decision_reason) item.appendChild(el("p", "card-decision", "“" + approval.decision_reason + "”"));
    return item;
  }

  // ---------------------------------------------------------------- live updates

  let pendingChange = null;

  function noteChange(change) {
    if (!pendingChange) {
      pendingChange = { chats: new Set(), approvals: false, everything: false };
      setTimeout(applyChange, 40);
    }
    for (const id of change.chats || []) pendingChange.chats.add(id);
    pendingChange.approvals = pendingChange.approvals || Boolean(change.approvals);
    pendingChange.everything = pendingChange.everything || Boolean(change.everything);
  }

  function applyChange() {
    const change = pendingChange;
    pendingChange = null;
    const work = [refreshChats()];
    if (change.everything || change.approvals) work.push(refreshApprovals());
    if (state.chatId !== null && (change.everything || change.chats.has(state.chatId))) work.push(refreshChat());
    Promise.all(work).catch(() => {});
  }

  async function refreshAll() {
    await Promise.all([refreshChats(), refreshApprovals(), refreshChat()]);
  }

  function setLive(stateName, text) {
    liveStatus.dataset.state = stateName;
    liveStatus.textContent = text;
  }

  function connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => {
      // Whatever happened while the stream was down is read again here.
      refreshAll()
        .then(() => setLive("live", "Live"))
        .catch(() => setLive("offline", "Studio is not answering"));
    });
    source.addEventListener("message", (event) => {
      try {
        noteChange(JSON.parse(event.data));
      } catch (error) {
        noteChange({ everything: true });
      }
    });
    source.addEventListener("error", () => {
      setLive(source.readyState === EventSource.CLOSED ? "offline" : "connecting", "Reconnecting…");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    });
  }

  // ---------------------------------------------------------------- wiring

  actAs.addEventListener("change", render);
  composer.addEventListener("submit", send);
  messageBox.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  async function start() {
    try {
      showStudio(await api("/api/studio"));
    } catch (error) {
      setLive("offline", error.message);
      return;
    }
    const hash = window.location.hash;
    const chatMatch = /^#chat-(\d+)$/.exec(hash);
    const newMatch = /^#new-(.+)$/.exec(hash);
    if (chatMatch) {
      state.chatId = Number(chatMatch[1]);
    } else if (newMatch && agents.has(decodeURIComponent(newMatch[1]))) {
      state.agent = decodeURIComponent(newMatch[1]);
    } else if (agents.size === 1) {
      state.agent = agents.keys().next().value;
    }
    render();
    connect();
  }

  start();
})();
