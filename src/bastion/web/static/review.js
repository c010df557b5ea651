// Bastion safety review page: the retention queue of deleted conversations. Plain JS, no build step.
"use strict";

(function () {
  const KEY_STORAGE = "bastion.reviewKey";
  const $ = (id) => document.getElementById(id);
  const keyInput = $("api-key");

  const { storageGet, storageSet, element, when, requestJson } = window.Bastion;
  function showError(message) { $("error-message").textContent = message; $("error").hidden = false; }
  function hideError() { $("error").hidden = true; }
  const api = (path) => requestJson("GET", path, keyInput.value.trim());

  async function open(id) {
    hideError();
    const conversation = await api(`/v1/review/conversations/${encodeURIComponent(id)}`);
    const list = $("viewer-messages");
    list.replaceChildren();
    for (const message of conversation.messages) {
      const item = element("li", "turn");
      const bubble = element("div", `bubble ${message.role === "user" ? "user" : "assistant"}`, message.content);
      bubble.dataset.testid = "viewer-message";
      item.appendChild(bubble);
      list.appendChild(item);
    }
    $("viewer-title").textContent = `Deleted ${when(conversation.deleted_at)} · purged ${when(conversation.purge_at)}`;
    $("viewer").hidden = false;
  }

  async function load() {
    hideError();
    $("viewer").hidden = true;
    if (!keyInput.value.trim()) return;
    try {
      const body = await api("/v1/review/conversations");
      $("queue-lede").textContent =
        `Conversations their owners deleted, kept for safety review for ${body.retention_days} days, then purged.`;
      const list = $("queue");
      list.replaceChildren();
      for (const c of body.data) {
        const item = element("li", "conversation");
        item.dataset.testid = "queue-item";
        item.dataset.id = c.id;
        const info = element("div");
        info.appendChild(element("strong", "", c.model));
        info.appendChild(element("span", "meta", `Deleted ${when(c.deleted_at)} · purged ${when(c.purge_at)}`));
        const read = element("button", "secondary", "Read (audited)");
        read.type = "button";
        read.dataset.testid = "read-button";
        read.addEventListener("click", () => open(c.id).catch((err) => showError(err.message)));
        item.append(info, read);
        list.appendChild(item);
      }
      $("empty").hidden = body.data.length > 0;
    } catch (err) {
      showError(err.message);
    }
  }

  keyInput.value = storageGet(KEY_STORAGE);
  keyInput.addEventListener("change", () => { storageSet(KEY_STORAGE, keyInput.value.trim()); load(); });
  load();
})();
