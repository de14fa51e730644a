// One approval's page: keyboard shortcuts, and a live notice when someone else decides it.
//
// Usernames come from users: shown with textContent only, never innerHTML.
(function () {
  "use strict";

  const notice = document.getElementById("live-decided");
  if (!notice) return;
  const form = document.getElementById("decide-form");
  const approvalId = Number(notice.dataset.approvalId);
  let submitting = false;

  function button(value) {
    return form ? form.querySelector('button[name="decision"][value="' + value + '"]') : null;
  }

  if (form) {
    form.addEventListener("submit", () => {
      submitting = true;
    });
  }

  window.AnviaReviewKeys.bind({
    a: () => {
      const approve = button("approve");
      if (!approve || approve.disabled) return false;
      approve.click();
    },
    r: () => {
      const reject = button("reject");
      if (!reject || reject.disabled) return false;
      reject.click();
    },
    e: () => {
      const field = document.querySelector("#arg-fields input, #arg-fields select, #id_edited_args");
      if (!field || field.disabled) return false;
      const details = field.closest("details");
      if (details) details.open = true;
      field.focus();
      if (typeof field.select === "function" && field.type !== "checkbox") field.select();
    },
    u: () => {
      window.location.assign(notice.dataset.queueUrl);
    },
  });

  function decidedElsewhere(approval) {
    if (form) {
      for (const control of form.elements) control.disabled = true;
      form.setAttribute("aria-disabled", "true");
    }
    const status = approval.status === "expired" ? "expired" : String(approval.status);
    const who = approval.decided_by ? "by " + approval.decided_by + " " : "";
    notice.replaceChildren();
    const line = document.createElement("p");
    line.textContent =
      approval.status === "expired"
        ? "This request expired just now. Nothing you send here will be recorded."
        : "Decided " + who + "just now: " + status + ". Your form is closed; nothing you typed was sent.";
    const next = document.createElement("a");
    next.href = notice.dataset.queueUrl;
    next.textContent = "Back to the queue";
    notice.append(line, next);
    notice.hidden = false;
    const badge = document.getElementById("approval-status");
    if (badge) {
      badge.textContent = status.charAt(0).toUpperCase() + status.slice(1);
      badge.className = "badge " + status;
    }
    document.title = "Decided · " + document.title.replace(/^Decided · /, "");
  }

  // One approval of several: the page says who approved so far (text only).
  function voted(approval) {
    const approvers = Array.isArray(approval.approvals) ? approval.approvals.map(String) : [];
    const quorum = Number(approval.quorum) || 1;
    const words = approvers.length + " of " + quorum + " approvals";
    const badge = document.getElementById("approval-status");
    if (badge) badge.textContent = words;
    const statusText = document.getElementById("status-text");
    if (statusText) statusText.textContent = words;
    const who = document.getElementById("approvers");
    if (who) who.textContent = (approvers.join(", ") || "nobody yet") + " (" + approvers.length + " of " + quorum + " needed)";
  }

  function handle(message) {
    if (!message || typeof message !== "object" || !message.approval) return;
    if (message.type === "approval.voted" && Number(message.approval.id) === approvalId) {
      voted(message.approval);
      return;
    }
    if (message.type !== "approval.decided" && message.type !== "approval.expired") return;
    if (Number(message.approval.id) !== approvalId || submitting) return;
    decidedElsewhere(message.approval);
  }

  async function catchUp() {
    if (notice.dataset.pending !== "1") return;
    try {
      const response = await fetch(notice.dataset.pendingUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      const ids = new Set((data.approvals || []).map((approval) => Number(approval.id)));
      // Only a full list can prove this request is no longer pending.
      if (!ids.has(approvalId) && Number(data.total) === ids.size && !submitting) {
        decidedElsewhere({ id: approvalId, status: "no longer pending", decided_by: null });
      }
    } catch {
      // The socket's own status line tells the reviewer live updates are off.
    }
  }

  // Who else has this page open: a heartbeat every few seconds (best effort; names via textContent).
  const viewing = document.getElementById("also-viewing");
  function csrfToken() {
    const field = document.querySelector('input[name="csrfmiddlewaretoken"]');
    if (field) return field.value;
    const cookie = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("csrftoken="));
    return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
  }
  async function heartbeat() {
    let refresh = 10;
    try {
      const response = await fetch(viewing.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken() },
      });
      if (response.ok) {
        const data = await response.json();
        const others = Array.isArray(data.viewers) ? data.viewers.map(String) : [];
        viewing.textContent = others.length ? "Also viewing now: " + others.join(", ") + "." : "";
        viewing.hidden = others.length === 0;
        refresh = Number(data.refresh_seconds) || refresh;
      }
    } catch {
      // Presence is a hint; the next beat tries again.
    }
    window.setTimeout(heartbeat, refresh * 1000);
  }
  if (viewing && notice.dataset.pending === "1") {
    heartbeat();
    window.addEventListener("pagehide", () => {
      const body = new FormData();
      body.append("csrfmiddlewaretoken", csrfToken());
      navigator.sendBeacon(viewing.dataset.url + "?closing=1", body);
    });
  }

  if (notice.dataset.pending !== "1") return;
  const status = document.createElement("p");
  status.className = "visually-hidden";
  status.id = "live-status";
  document.body.append(status);
  window.AnviaLiveSocket.open({
    path: notice.dataset.socketPath,
    status,
    catchUp,
    onMessage: handle,
    stillAllowed: async () => true,
    stoppedText: "Live updates stopped.",
  });
})();
