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
  const COLUMNS = 9;
  const live = table.dataset.live === "1";
  const me = table.dataset.me || "";
  const bulkForm = document.getElementById("bulk-form");

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
    document.title = (total > 0 ? "(" + total + ") " : "") + document.title.replace(/^\(\d+\) /, "");
    empty.hidden = rows.rows.length > 0;
  }

  function announce(text) {
    announcer.textContent = text;
  }

  function cell(text, className, label) {
    const td = element("td", text, className);
    if (label) td.dataset.label = label;
    return td;
  }

  function buildRow(approval, id) {
    const row = element("tr", null, "arrived age-fresh");
    row.dataset.approvalId = String(id);
    row.dataset.pending = "";

    const pick = cell(null, "pick");
    const box = element("input");
    box.type = "checkbox";
    box.name = "ids";
    box.value = String(id);
    box.setAttribute("aria-label", "Select #" + id);
    pick.append(box);
    row.append(pick);
    row.append(cell(id, "num", "#"));
    const tool = cell(null, "tool", "Tool");
    tool.append(element("code", approval.tool_name));
    row.append(tool);
    row.append(cell("\u2014", "amount", "Amount"));
    row.append(cell(approval.requested_by || "\u2014", "customer", "Customer"));
    row.append(cell(approval.reason, "reason", "Reason"));
    const status = cell(null, "status-cell", "Status");
    row.append(status);
    showStatus(row, approval);

    const age = cell(null, "age", "Waiting");
    const time = element("time");
    time.dataset.age = "";
    const created = new Date(approval.created_at);
    if (!Number.isNaN(created.getTime())) {
      time.dateTime = approval.created_at;
      time.textContent = ageText(created);
    }
    age.append(time);
    row.append(age);

    const open = cell(null, "open-cell");
    const link = element("a", "Review", "open");
    link.href = detailBase + id + "/";
    link.append(element("span", " #" + id, "visually-hidden"));
    open.append(link);
    row.append(open);
    return row;
  }

  // "Pending", or for a request several reviewers must approve "1 of 2 approvals" and who.
  function showStatus(row, approval) {
    const status = row.querySelector("td.status-cell");
    if (!status) return;
    const quorum = Number(approval.quorum) || 1;
    const approvers = Array.isArray(approval.approvals) ? approval.approvals.map(String) : [];
    const text = quorum > 1 ? approvers.length + " of " + quorum + " approvals" : "Pending";
    status.replaceChildren(element("span", text, "status tone-pending"));
    if (quorum > 1 && approvers.length) {
      status.append(" ", element("span", "approved by " + approvers.join(", "), "muted approvers"));
    }
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

  // The socket's summary carries no arguments: amount and customer come from the page's own
  // JSON, fetched once for a burst of arrivals.
  let enrichTimer = null;

  function fill(row, approval) {
    const amount = row.querySelector("td.amount");
    const customer = row.querySelector("td.customer");
    if (amount && approval.amount) amount.textContent = approval.amount;
    if (customer && approval.customer) customer.textContent = approval.customer;
  }

  function enrichSoon() {
    if (enrichTimer !== null) return;
    enrichTimer = window.setTimeout(async () => {
      enrichTimer = null;
      try {
        const response = await fetch(pendingUrl, { credentials: "same-origin" });
        if (!response.ok) return;
        const data = await response.json();
        for (const approval of data.approvals || []) {
          const row = rowFor(approvalId(approval.id));
          if (row && !row.classList.contains("leaving")) fill(row, approval);
        }
      } catch {
        // The row keeps its dashes until the next reload.
      }
    }, 300);
  }

  function arrive(approval, { quiet = false } = {}) {
    const id = approvalId(approval.id);
    if (id === null || approval.status !== "pending" || rowFor(id)) return;
    total += 1;
    // A filtered view or the reviewer's own request: counted, but the row waits for a reload.
    if (!live || (me && approval.requested_by === me) || approval.mine) {
      refreshCount();
      return;
    }
    const row = buildRow(approval, id);
    insertRow(row, id);
    if (approval.amount !== undefined) fill(row, approval);
    else enrichSoon();
    refreshCount();
    if (!quiet) announce("New approval #" + id + ": " + approval.tool_name);
  }

  function leave(id, line, kind) {
    const row = rowFor(id);
    // Rows of decided requests (a status filter) stay as they are.
    if (row === null || !("pending" in row.dataset)) return;
    if (!row.classList.contains("leaving")) total = Math.max(0, total - 1);
    const hadFocus = row.contains(document.activeElement);
    row.className = "leaving " + kind;
    row.replaceChildren();
    const cell = element("td", "#" + id + " " + line);
    cell.colSpan = COLUMNS;
    row.append(cell);
    if (hadFocus) table.focus();
    if (current === row) current = null;
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
    if (message.type === "approval.created" || message.type === "approval.escalated") {
      arrive(approval);
    } else if (message.type === "approval.voted") {
      const row = rowFor(id);
      if (row && "pending" in row.dataset && !row.classList.contains("leaving")) {
        showStatus(row, approval);
        announce("#" + id + ": " + (approval.approvals || []).length + " of " + approval.quorum + " approvals");
      }
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
    for (const approval of pending.values()) {
      const row = rowFor(approvalId(approval.id));
      if (row && "pending" in row.dataset && !row.classList.contains("leaving")) showStatus(row, approval);
      else arrive(approval, { quiet: true });
    }
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

  // Keyboard triage: j/k move through the rows, o opens, x ticks, a/r decide the ticked rows.
  let current = null;

  function decidable() {
    return Array.from(rows.querySelectorAll("tr[data-approval-id]:not(.leaving)"));
  }

  function focusRow(row) {
    if (!row) return;
    if (current && current !== row) {
      current.classList.remove("current");
      current.removeAttribute("tabindex");
    }
    current = row;
    row.classList.add("current");
    row.tabIndex = -1;
    const link = row.querySelector("a.open");
    (link || row).focus();
    row.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    const list = decidable();
    if (!list.length) return false;
    const at = current ? list.indexOf(current) : -1;
    const next = at === -1 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, at + step));
    focusRow(list[next]);
  }

  function rowOfFocus() {
    const active = document.activeElement;
    const row = active instanceof Element ? active.closest("#pending-rows tr[data-approval-id]") : null;
    return row || current;
  }

  function bulk(value) {
    if (!bulkForm) return false;
    const ticked = bulkForm.querySelectorAll('input[name="ids"]:checked');
    if (ticked.length === 0) {
      const row = rowOfFocus();
      const box = row ? row.querySelector('input[name="ids"]') : null;
      if (!box) return false;
      box.checked = true;
    }
    const n = bulkForm.querySelectorAll('input[name="ids"]:checked').length;
    const verb = value === "approve" ? "Approve" : "Reject";
    if (!window.confirm(verb + " " + n + " request" + (n === 1 ? "" : "s") + "?")) return;
    document.getElementById(value === "approve" ? "bulk-approve" : "bulk-reject").click();
  }

  window.AnviaReviewKeys.bind({
    j: () => move(1),
    k: () => move(-1),
    o: () => {
      const row = rowOfFocus();
      const link = row ? row.querySelector("a.open") : null;
      if (!link) return false;
      window.location.assign(link.href);
    },
    x: () => {
      const row = rowOfFocus();
      const box = row ? row.querySelector('input[name="ids"]') : null;
      if (!box) return false;
      box.checked = !box.checked;
    },
    a: () => bulk("approve"),
    r: () => bulk("reject"),
    "/": () => {
      const search = document.querySelector('.queue-filters input[name="q"]');
      if (!search) return false;
      search.focus();
    },
  });

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
