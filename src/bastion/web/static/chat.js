// Bastion chat page: streams chat completions through the gateway; plain JS, no build step.
"use strict";

(function () {
  const KEY_STORAGE = "bastion.apiKey";
  const MODEL_STORAGE = "bastion.chatModel";
  const $ = (id) => document.getElementById(id);
  const form = $("chat-form");
  const input = $("message");
  const modelSelect = $("model");
  const keyInput = $("api-key");
  const sendButton = $("send");
  const transcript = $("transcript");
  const history = [];

  const { storageGet, storageSet } = window.Bastion;
  function headers() {
    const h = { "Content-Type": "application/json", Accept: "text/event-stream" };
    const key = keyInput.value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }
  function showError(message) {
    $("error-message").textContent = message;
    $("error").hidden = false;
  }
  function hideError() { $("error").hidden = true; }

  async function errorFrom(response) {
    try {
      const body = await response.json();
      if (body && body.error) return `${body.error.message} (HTTP ${response.status})`;
    } catch (_err) { /* not JSON */ }
    return `HTTP ${response.status}`;
  }

  async function loadModels() {
    const status = $("model-status");
    try {
      const response = await fetch("/v1/models", { headers: headers() });
      if (!response.ok) { status.textContent = "Models: " + (await errorFrom(response)); return; }
      const body = await response.json();
      const wanted = storageGet(MODEL_STORAGE);
      modelSelect.replaceChildren();
      for (const model of body.data) {
        const option = document.createElement("option");
        option.value = model.id;
        option.textContent = model.default ? `${model.id} (default)` : model.id;
        if (model.id === wanted || (!wanted && model.default)) option.selected = true;
        modelSelect.appendChild(option);
      }
      status.textContent = `${body.data.length} model(s) available.`;
    } catch (err) {
      status.textContent = "Could not list models: " + err;
    }
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // One verdict pill: side + action + categories.
  function verdictPill(side, verdict) {
    const action = verdict ? verdict.action : "allow";
    const pill = element("span", `verdict v-${action}`);
    pill.dataset.testid = `verdict-${side}`;
    pill.dataset.action = action;
    const label = { allow: "passed", flag: "flagged", redact: "redacted", block: "blocked" }[action] || action;
    pill.appendChild(element("strong", "", `${side}: ${label}`));
    if (verdict && verdict.categories && verdict.categories.length) {
      pill.appendChild(element("code", "", verdict.categories.join(", ")));
    }
    return pill;
  }

  function renderVerdicts(box, extension, finishReason) {
    box.replaceChildren();
    if (!extension) return;
    box.appendChild(verdictPill("input", extension.input));
    if (extension.output) box.appendChild(verdictPill("output", extension.output));
    else if (extension.input && extension.input.action === "block") {
      box.appendChild(element("span", "hint", "the model was not called"));
    }
    if (finishReason === "content_filter") box.dataset.blocked = "true";
    box.appendChild(element("span", "hint", `policy ${extension.policy}`));
  }

  // Parse a server-sent event stream, calling onEvent with each JSON payload.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return;
          onEvent(JSON.parse(data));
        }
      }
    }
  }

  async function send(text) {
    hideError();
    $("empty").hidden = true;
    const turn = element("li", "turn");
    turn.dataset.testid = "turn";
    turn.appendChild(element("div", "bubble user", text));
    const answer = element("div", "bubble assistant", "");
    answer.dataset.testid = "assistant-message";
    answer.setAttribute("aria-busy", "true");
    const verdicts = element("div", "verdicts");
    verdicts.dataset.testid = "verdicts";
    turn.append(answer, verdicts);
    transcript.appendChild(turn);
    history.push({ role: "user", content: text });
    sendButton.disabled = true;
    let reply = "";
    let finish = null;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify({ model: modelSelect.value, messages: history, stream: true }),
      });
      if (!response.ok) throw new Error(await errorFrom(response));
      await readEvents(response, (event) => {
        if (event.error) throw new Error(event.error.message);
        for (const choice of event.choices || []) {
          const piece = (choice.delta && choice.delta.content) || "";
          if (piece) { reply += piece; answer.textContent = reply; }
          if (choice.finish_reason) {
            finish = choice.finish_reason;
            renderVerdicts(verdicts, event.bastion_moderation, finish);
          }
        }
        answer.scrollIntoView({ block: "nearest" });
      });
      if (finish === "content_filter") answer.classList.add("is-blocked");
      history.push({ role: "assistant", content: reply });
    } catch (err) {
      history.pop();
      turn.remove();
      showError(String(err.message || err));
    } finally {
      answer.setAttribute("aria-busy", "false");
      sendButton.disabled = false;
      input.focus();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || sendButton.disabled) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  $("clear").addEventListener("click", () => {
    history.length = 0;
    transcript.replaceChildren();
    $("empty").hidden = false;
    hideError();
  });
  keyInput.value = storageGet(KEY_STORAGE);
  keyInput.addEventListener("change", () => { storageSet(KEY_STORAGE, keyInput.value.trim()); loadModels(); });
  modelSelect.addEventListener("change", () => storageSet(MODEL_STORAGE, modelSelect.value));
  loadModels();
})();
