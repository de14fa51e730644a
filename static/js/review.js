// The reviewer queue, kept live over the reviewer websocket (/ws/approvals/).
//
// Reasons and usernames come from models and users, so they are untrusted text: the DOM is
// built with createElement and textContent only, never innerHTML.
(function () {
  "use strict";

  const table = document.getElementById("review-queue");
  if (!table) return;
  const rows = document.getElementById("pending-rows");
  const empty = document.getElementById("queue-empty");
  const count = document.getElementById("pending-count");
  const announcer = document.getElementById("queue-announcer");

  const detailBase = table.dataset.detailBase;
  const pendingUrl = table.dataset.pendingUrl;

  const LEAVE_AFTER_MS = 8000;
  const AGE_REFRESH_MS = 30000;
  const COLUMNS = 6;

  let total = Number(count.textContent) || 0;
  // What the socket said since it (re)opened, so a slower catch-up fetch cannot undo it.
  let heardSinceOpen = new Map();

  function approvalId(value) {
    const id = Number(value);
    return Number.isSafeInteger(id) && id > 0 ? id : null;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function rowFor(id) {
    for (const row of rows.rows) {
      if (approvalId(row.dataset.approvalId) === id) return row;
    }
    return null;
  }

  // The same words as Django's |timesince, so server- and script-rendered ages match.
  function ageText(since) {
    const seconds = Math.max(0, (Date.now() - since.getTime()) / 1000);
    const units = [
      ["year", 365 * 86400],
      ["month", 30 * 86400],
      ["week", 7 * 86400],
      ["day", 86400],
      ["hour", 3600],
      ["minute", 60],
    ];
    const parts = [];
    let rest = seconds;
    for (const [name, size] of units) {
      const n = Math.floor(rest / size);
      if (n > 0 || parts.length > 0) {
        if (n > 0) parts.push(n + "\u00a0" + name + (n === 1 ? "" : "s"));
        rest -= n * size;
        if (parts.length === 2 || (parts.length === 1 && n === 0)) break;
      }
    }
    return parts.length ? parts.join(", ") : "0\u00a0minutes";
  }

  function refreshAges() {
    for (const time of table.querySelectorAll("time[data-age]")) {
      const since = new Date(time.dateTime);
      if (!Number.isNaN(since.getTime())) time.textContent = ageText(since);
    }
  }

  function refreshCount() {
    total = Math.max(total, rows.querySelectorAll("tr[data-approval-id]:not(.leaving)").length);
    count.textContent = String(total);
    count.setAttribute("aria-label", total + " waiting");
    empty.hidden = rows.rows.length > 0;
  }

  function announce(text) {
    announcer.textContent = text;
  }

  function buildRow(approval, id) {
    const row = element("tr", null, "arrived");
    row.dataset.approvalId = String(id);

    row.append(element("td", id, "num"));
    const tool = element("td");
    tool.append(element("code", approval.tool_name));
    row.append(tool);
    row.append(element("td", approval.reason, "reason"));
    row.append(element("td", approval.requested_by || "\u2014"));

    const age = element("td");
    const time = element("time");
    time.dataset.age = "";
    const created = new Date(approval.created_at);
    if (!Number.isNaN(created.getTime())) {
      time.dateTime = approval.created_at;
      time.textContent = ageText(created);
    }
    age.append(time);
    row.append(age);

    const open = element("td");
    const link = element("a", "Review", "open");
    link.href = detailBase + id + "/";
    link.append(element("span", " #" + id, "visually-hidden"));
    open.append(link);
    row.append(open);
    return row;
  }

  // Oldest first; ids grow with creation time.
  function insertRow(row, id) {
    for (const other of rows.rows) {
      if (approvalId(other.dataset.approvalId) > id) {
        rows.insertBefore(row, other);
        return;
      }
    }
    rows.append(row);
  }

  function arrive(approval, { quiet = false } = {}) {
    const id = approvalId(approval.id);
    if (id === null || approval.status !== "pending" || rowFor(id)) return;
    insertRow(buildRow(approval, id), id);
    total += 1;
    refreshCount();
    if (!quiet) announce("New approval #" + id + ": " + approval.tool_name);
  }

  function leave(id, line, kind) {
    const row = rowFor(id);
    if (row === null) return;
    if (!row.classList.contains("leaving")) total = Math.max(0, total - 1);
    const hadFocus = row.contains(document.activeElement);
    row.className = "leaving " + kind;
    row.replaceChildren();
    const cell = element("td", "#" + id + " " + line);
    cell.colSpan = COLUMNS;
    row.append(cell);
    if (hadFocus) table.focus();
    refreshCount();
    announce("#" + id + " " + line);
    window.setTimeout(() => {
      row.remove();
      refreshCount();
    }, LEAVE_AFTER_MS);
  }

  function decidedLine(approval) {
    const tool = approval.tool_name ? approval.tool_name + ": " : "";
    if (approval.status === "expired") return tool + "expired";
    const who = approval.decided_by ? " by " + approval.decided_by : "";
    return tool + String(approval.status) + who;
  }

  function handle(message) {
    if (!message || typeof message !== "object" || !message.approval) return;
    const approval = message.approval;
    const id = approvalId(approval.id);
    if (id === null) return;
    heardSinceOpen.set(id, message.type);
    if (message.type === "approval.created") {
      arrive(approval);
    } else if (message.type === "approval.decided" || message.type === "approval.expired") {
      leave(id, decidedLine(approval), message.type === "approval.expired" ? "expired" : String(approval.status));
    }
  }

  // Requests made while the socket was down (or before it first opened) are caught up here,
  // each time the socket (re)opens.
  async function catchUp() {
    heardSinceOpen = new Map();
    let data;
    try {
      const response = await fetch(pendingUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      data = await response.json();
    } catch {
      return;
    }
    const pending = new Map();
    for (const approval of data.approvals || []) {
      const id = approvalId(approval.id);
      if (id !== null && !heardSinceOpen.has(id)) pending.set(id, approval);
    }
    for (const row of Array.from(rows.rows)) {
      const id = approvalId(row.dataset.approvalId);
      if (id !== null && !row.classList.contains("leaving") && !pending.has(id) && !heardSinceOpen.has(id)) {
        leave(id, "is no longer pending", "gone");
      }
    }
    for (const approval of pending.values()) arrive(approval, { quiet: true });
    if (Number.isInteger(data.total)) {
      total = data.total;
      refreshCount();
    }
  }

  // A session that ended or lost the permission makes the socket fail the same way a network
  // error does; ask the page's own JSON endpoint before retrying forever.
  async function stillReviewer() {
    try {
      const response = await fetch(pendingUrl, { credentials: "same-origin", redirect: "manual" });
      return !(response.type === "opaqueredirect" || response.status === 401 || response.status === 403);
    } catch {
      return true;
    }
  }

  table.tabIndex = -1;
  refreshAges();
  window.setInterval(refreshAges, AGE_REFRESH_MS);
  window.AnviaLiveSocket.open({
    path: table.dataset.socketPath,
    status: document.getElementById("live-status"),
    catchUp,
    onMessage: handle,
    stillAllowed: stillReviewer,
    stoppedText: "Live updates stopped: you are no longer signed in as a reviewer. Reload the page to sign in.",
  });
})();
