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
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function when(iso) {
    const date = new Date(iso);
    return isNaN(date) ? iso : date.toLocaleString();
  }
  // Calls the API with `key`: the parsed JSON body, or throws an Error carrying the error envelope's message.
  async function requestJson(method, path, key, body) {
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = "Bearer " + key;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (_err) { /* not JSON */ }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : "the server answered without details";
      throw new Error(`${message} (HTTP ${response.status})`);
    }
    return data;
  }
  return { storageGet, storageSet, element, when, requestJson };
})();
