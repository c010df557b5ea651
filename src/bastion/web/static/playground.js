// Bastion moderation playground: plain JS, no build step, no network beyond this server.
"use strict";

(function () {
  const KEY_STORAGE = "bastion.apiKey";
  const MODEL_STORAGE = "bastion.model";

  const $ = (id) => document.getElementById(id);
  const form = $("moderate-form");
  const textInput = $("text");
  const modelSelect = $("model");
  const modelStatus = $("model-status");
  const keyInput = $("api-key");
  const explainToggle = $("explain");
  const submitButton = $("submit");
  const errorBox = $("error");
  const resultPanel = $("result-panel");

  const { storageGet, storageSet } = window.Bastion;

  function headers() {
    const h = { "Content-Type": "application/json", Accept: "application/json" };
    const key = keyInput.value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  // ---- errors -----------------------------------------------------------------------------------

  function showError(message, meta) {
    $("error-message").textContent = message;
    $("error-meta").textContent = meta || "";
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
    $("error-message").textContent = "";
    $("error-meta").textContent = "";
  }

  // The OpenAI error envelope {"error": {"message", "type", "param", "code"}} → readable parts.
  async function errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_err) {
      body = null;
    }
    const err = body && typeof body === "object" ? body.error : null;
    if (err && typeof err === "object" && err.message) {
      const meta = ["HTTP " + response.status, err.type, err.code, err.param ? "param: " + err.param : null]
        .filter(Boolean)
        .join(" · ");
      return { message: String(err.message), meta: meta };
    }
    return {
      message: "The server answered " + response.status + " " + (response.statusText || "") + ".",
      meta: "HTTP " + response.status,
    };
  }

  // ---- models -----------------------------------------------------------------------------------

  async function loadModels() {
    modelStatus.textContent = "Loading models…";
    let response;
    try {
      response = await fetch("/v1/moderations/models", { headers: headers() });
    } catch (err) {
      modelStatus.textContent = "Could not reach the server to list models.";
      return;
    }
    if (!response.ok) {
      const { message } = await errorFrom(response);
      modelStatus.textContent =
        response.status === 401 ? "Enter an API key to list the models." : "Models unavailable: " + message;
      return;
    }
    const models = await response.json();
    const wanted = modelSelect.value || storageGet(MODEL_STORAGE);
    modelSelect.replaceChildren();
    const fallback = document.createElement("option");
    fallback.value = "";
    fallback.textContent = "Server default";
    modelSelect.append(fallback);
    let defaultId = "";
    for (const model of models) {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = model.id + (model.default ? " (default)" : "");
      if (model.description) option.title = model.description;
      modelSelect.append(option);
      if (model.default) defaultId = model.id;
    }
    const ids = models.map((m) => m.id);
    serverDefault = defaultId;
    modelSelect.value = ids.includes(wanted) ? wanted : defaultId;
    modelStatus.textContent = models.length + " model" + (models.length === 1 ? "" : "s") + " available.";
    loadCard();
  }

  // ---- model card -------------------------------------------------------------------------------

  const cardBox = $("model-card");
  const cardStatus = $("card-status");
  const cardBody = $("card-body");
  let serverDefault = "";
  let cardShown = null;

  // The selected model's card, fetched when the panel is open (again only when the model changes).
  async function loadCard() {
    const id = modelSelect.value || serverDefault;
    if (!cardBox.open || !id || id === cardShown) return;
    cardShown = id;
    cardStatus.textContent = "Loading the card of " + id + "…";
    cardBody.replaceChildren();
    let response;
    try {
      response = await fetch("/v1/moderations/models/" + encodeURIComponent(id) + "/card", { headers: headers() });
    } catch (_err) {
      cardShown = null;
      cardStatus.textContent = "Could not reach the server for the model card.";
      return;
    }
    if (!response.ok) {
      cardShown = null;
      cardStatus.textContent = "Model card unavailable: " + (await errorFrom(response)).message;
      return;
    }
    const body = await response.json();
    if (id !== (modelSelect.value || serverDefault)) return; // another model was picked meanwhile
    const rendered = body.backends.filter((b) => b.html);
    const without = body.backends.filter((b) => !b.html).map((b) => b.backend);
    cardStatus.textContent = rendered.length
      ? body.model + (without.length ? " · no card for its " + without.join(", ") + " backend" : "")
      : body.model + " has no model card (its backends: " + without.join(", ") + ").";
    for (const backend of rendered) {
      const article = document.createElement("article");
      article.dataset.backend = backend.backend;
      // Rendered by the server from the card's Markdown with raw HTML escaped (moderation/card.py).
      article.innerHTML = backend.html;
      cardBody.append(article);
    }
  }

  // ---- results ----------------------------------------------------------------------------------

  function percent(score) {
    const p = Math.max(0, Math.min(1, Number(score) || 0)) * 100;
    if (p > 0 && p < 0.1) return "<0.1%";
    return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + "%";
  }

  function renderCategories(result) {
    const list = $("categories");
    list.replaceChildren();
    const scores = result.category_scores || {};
    const flags = result.categories || {};
    for (const key of Object.keys(scores)) {
      const score = Number(scores[key]) || 0;
      const flagged = Boolean(flags[key]);
      const li = document.createElement("li");
      li.className = "category" + (flagged ? " is-flagged" : "") + (key.includes("/") ? " is-sub" : "");
      li.setAttribute("data-testid", "category-row");
      li.dataset.category = key;
      li.dataset.flagged = String(flagged);

      const name = document.createElement("span");
      name.className = "cat-name";
      name.id = "cat-" + key.replace(/[^a-z0-9]+/gi, "-");
      name.textContent = key;

      const track = document.createElement("div");
      track.className = "bar";
      track.setAttribute("role", "meter");
      track.setAttribute("aria-valuemin", "0");
      track.setAttribute("aria-valuemax", "100");
      track.setAttribute("aria-valuenow", (score * 100).toFixed(1));
      track.setAttribute("aria-labelledby", name.id);
      track.setAttribute("aria-valuetext", percent(score) + (flagged ? ", flagged" : ""));
      track.setAttribute("data-testid", "category-bar");
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = Math.max(0, Math.min(100, score * 100)).toFixed(2) + "%";
      track.append(fill);

      const value = document.createElement("span");
      value.className = "cat-score";
      value.setAttribute("data-testid", "category-score");
      value.textContent = percent(score);

      const tag = document.createElement("span");
      tag.className = "cat-flag";
      tag.textContent = flagged ? "flagged" : "";

      li.append(name, track, value, tag);
      list.append(li);
    }
  }

  // Python offsets count code points; JS strings count UTF-16 units: work on code points.
  function renderHighlights(text, explanations) {
    const block = $("explain-block");
    const out = $("highlighted");
    out.replaceChildren();
    if (!explanations) {
      block.hidden = true;
      return;
    }
    block.hidden = false;
    const chars = Array.from(text);
    const marks = new Array(chars.length).fill(null);
    let any = false;
    for (const [category, spans] of Object.entries(explanations)) {
      for (const span of spans || []) {
        const start = Math.max(0, span.start | 0);
        const end = Math.min(chars.length, span.end | 0);
        for (let i = start; i < end; i++) {
          marks[i] = marks[i] || new Set();
          marks[i].add(category);
          any = true;
        }
      }
    }
    const note = $("explain-note");
    note.textContent = any
      ? ""
      : Object.keys(explanations).length
        ? "The model flagged this text as a whole; no single span stands out."
        : "Nothing flagged, nothing to highlight.";
    let i = 0;
    while (i < chars.length) {
      const label = marks[i] ? Array.from(marks[i]).sort().join(", ") : "";
      let j = i + 1;
      while (j < chars.length && (marks[j] ? Array.from(marks[j]).sort().join(", ") : "") === label) j++;
      const piece = chars.slice(i, j).join("");
      if (label) {
        const mark = document.createElement("mark");
        mark.textContent = piece;
        mark.title = label;
        mark.setAttribute("data-testid", "highlight");
        mark.dataset.categories = label;
        out.append(mark);
      } else {
        out.append(document.createTextNode(piece));
      }
      i = j;
    }
  }

  function renderResult(body, text, elapsedMs) {
    const result = (body.results || [])[0];
    if (!result) {
      showError("The server returned no result.", "");
      return;
    }
    $("empty").hidden = true;
    $("result").hidden = false;
    const verdict = $("verdict");
    const flagged = Boolean(result.flagged);
    verdict.textContent = flagged ? "FLAGGED" : "Not flagged";
    verdict.className = "badge " + (flagged ? "badge-flagged" : "badge-ok");
    verdict.dataset.flagged = String(flagged);
    const names = Object.keys(result.categories || {}).filter((k) => result.categories[k]);
    $("result-meta").textContent =
      (flagged ? names.join(", ") + " · " : "") + "model " + body.model + " · " + Math.round(elapsedMs) + " ms";
    renderCategories(result);
    renderHighlights(text, result.explanations || null);
  }

  // ---- submit -----------------------------------------------------------------------------------

  async function moderate() {
    const text = textInput.value;
    hideError();
    if (!text.trim()) {
      showError("Enter some text to moderate.", "");
      textInput.focus();
      return;
    }
    storageSet(KEY_STORAGE, keyInput.value.trim());
    const payload = { input: text };
    if (modelSelect.value) payload.model = modelSelect.value;
    if (explainToggle.checked) payload.explain = true;
    submitButton.disabled = true;
    resultPanel.setAttribute("aria-busy", "true");
    const started = performance.now();
    try {
      let response;
      try {
        response = await fetch("/v1/moderations", {
          method: "POST",
          headers: headers(),
          body: JSON.stringify(payload),
        });
      } catch (err) {
        showError("Could not reach the server: " + (err && err.message ? err.message : err), "network error");
        return;
      }
      if (!response.ok) {
        const { message, meta } = await errorFrom(response);
        showError(message, meta);
        return;
      }
      renderResult(await response.json(), text, performance.now() - started);
    } finally {
      submitButton.disabled = false;
      resultPanel.setAttribute("aria-busy", "false");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    moderate();
  });

  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!submitButton.disabled) moderate();
    }
  });

  keyInput.value = storageGet(KEY_STORAGE);
  keyInput.addEventListener("change", () => {
    storageSet(KEY_STORAGE, keyInput.value.trim());
    loadModels();
  });
  modelSelect.addEventListener("change", () => {
    storageSet(MODEL_STORAGE, modelSelect.value);
    loadCard();
  });
  cardBox.addEventListener("toggle", loadCard);

  loadModels();
})();
