// Helpers shared by every Bastion page (loaded before the page's own script). Plain JS, no build step.
"use strict";

window.Bastion = (function () {
  // Remembered values (the API key a page was given); storage may be disabled, then nothing is kept.
  function storageGet(name) {
    try { return window.localStorage.getItem(name) || ""; } catch (_err) { return ""; }
  }
  function storageSet(name, value) {
    try {
      if (value) window.localStorage.setItem(name, value);
      else window.localStorage.removeItem(name);
    } catch (_err) { /* not remembered */ }
  }
  return { storageGet, storageSet };
})();
