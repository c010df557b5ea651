// Bastion "Your data" page: opt-out, stored conversations, delete, export. Plain JS, no build step.
"use strict";

(function () {
  const KEY_STORAGE = "bastion.apiKey";
  const $ = (id) => document.getElementById(id);
  const keyInput = $("api-key");
  const optOut = $("opt-out");

  const { storageGet, storageSet, element, when, requestJson } = window.Bastion;
  function showError(message) { $("error-message").textContent = message; $("error").hidden = false; }
  function hideError() { $("error").hidden = true; }
  const api = (method, path, body) => requestJson(method, path, keyInput.value.trim(), body);

  function renderOptOut(state) {
    optOut.checked = state.opt_out;
    optOut.disabled = false;
    let text = state.effective ? "Opted out of training." : "Your new conversations may be used for training.";
    if (state.organization_opt_out) text = `Your organisation (${state.organization_plan}) is opted out of training.`;
    $("opt-out-status").textContent = text;
  }

  async function view(id) {
    const conversation = await api("GET", `/v1/conversations/${encodeURIComponent(id)}`);
    const list = $("viewer-messages");
    list.replaceChildren();
    for (const message of conversation.messages) {
      const item = element("li", "turn");
      const bubble = element("div", `bubble ${message.role === "user" ? "user" : "assistant"}`, message.content);
      bubble.dataset.testid = "viewer-message";
      item.appendChild(bubble);
      list.appendChild(item);
    }
    $("viewer-title").textContent = `Conversation with ${conversation.model}`;
    $("viewer").hidden = false;
  }

  async function remove(id) {
    if (!window.confirm("Delete this conversation? It disappears now and is purged within 30 days.")) return;
    await api("DELETE", `/v1/conversations/${encodeURIComponent(id)}`);
    $("viewer").hidden = true;
    await loadConversations();
  }

  async function loadConversations() {
    const body = await api("GET", "/v1/conversations");
    const list = $("conversations");
    list.replaceChildren();
    for (const c of body.data) {
      const item = element("li", "conversation");
      item.dataset.testid = "conversation";
      item.dataset.id = c.id;
      const info = element("div");
      info.appendChild(element("strong", "", c.model));
      info.appendChild(element("span", "meta", `Last message ${when(c.updated_at)}`));
      if (c.temporary) info.appendChild(element("span", "tag", `temporary · purged ${when(c.purge_at)}`));
      if (c.training_opt_out) info.appendChild(element("span", "tag opted-out", "not used for training"));
      const buttons = element("div", "buttons");
      const open = element("button", "secondary", "View");
      open.type = "button";
      open.dataset.testid = "view-button";
      open.addEventListener("click", () => view(c.id).catch((err) => showError(err.message)));
      const del = element("button", "secondary danger", "Delete");
      del.type = "button";
      del.dataset.testid = "delete-button";
      del.setAttribute("aria-label", `Delete conversation with ${c.model} from ${when(c.updated_at)}`);
      del.addEventListener("click", () => remove(c.id).catch((err) => showError(err.message)));
      buttons.append(open, del);
      item.append(info, buttons);
      list.appendChild(item);
    }
    $("empty").hidden = body.data.length > 0;
  }

  // Bumped by every opt-out change, so that a load that started before it cannot undo it on screen.
  let optOutVersion = 0;
  let loadedKey = null;

  async function load() {
    hideError();
    loadedKey = keyInput.value.trim();
    if (!loadedKey) { $("who").textContent = "Enter an API key to see your data."; return; }
    const version = optOutVersion;
    try {
      const me = await api("GET", "/v1/me");
      $("who").textContent = `User ${me.user_id} in ${me.organization_id} (key ${me.key_id}, ${me.role}).`;
      if (version === optOutVersion) renderOptOut(me.training_opt_out);
      await loadConversations();
    } catch (err) {
      showError(err.message);
    }
  }

  optOut.addEventListener("change", async () => {
    hideError();
    optOutVersion += 1;
    optOut.disabled = true;
    try {
      renderOptOut(await api("PUT", "/v1/me/training-opt-out", { opt_out: optOut.checked }));
    } catch (err) {
      optOut.checked = !optOut.checked;
      optOut.disabled = false;
      showError(err.message);
    }
  });

  $("export").addEventListener("click", async () => {
    hideError();
    try {
      const archive = await api("GET", "/v1/me/export");
      const blob = new Blob([JSON.stringify(archive, null, 2)], { type: "application/json" });
      const link = element("a");
      link.href = URL.createObjectURL(blob);
      link.download = `bastion-export-${archive.user.id}.json`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      $("export-status").textContent =
        `Exported ${archive.conversations.length} conversation(s) and ${archive.audit_events.length} audit event(s).`;
    } catch (err) {
      showError(err.message);
    }
  });

  keyInput.value = storageGet(KEY_STORAGE);
  keyInput.addEventListener("change", () => {
    storageSet(KEY_STORAGE, keyInput.value.trim());
    if (keyInput.value.trim() !== loadedKey) load(); // a blur after typing fires `change` again
  });
  optOut.disabled = true;
  load();
})();
