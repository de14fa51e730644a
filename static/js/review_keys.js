// Single-key shortcuts for the reviewer pages (queue and detail), and the "?" help dialog.
//
// Keys never fire while the reviewer types in a field, with a modifier held, or while a dialog
// is open, so a reason can contain "a" and "r".
(function () {
  "use strict";

  function typing(target) {
    if (!(target instanceof Element)) return false;
    return target.isContentEditable || target.closest("input, textarea, select") !== null;
  }

  function bind(handlers) {
    const help = document.getElementById("shortcut-help");
    document.documentElement.dataset.keys = "ready";
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      if (typing(event.target)) return;
      if (help && help.open) return;
      if (event.key === "?" && help) {
        event.preventDefault();
        help.showModal();
        return;
      }
      const handler = handlers[event.key];
      if (handler && handler(event) !== false) event.preventDefault();
    });
  }

  window.AnviaReviewKeys = { bind };
})();
