// Bastion red-team findings page: report a finding, list and triage findings. Plain JS, no build step.
"use strict";

(function () {
  const KEY_STORAGE = "bastion.apiKey";
  const API = "/v1/redteam/findings";
  const NEXT = {
    new: ["confirmed", "wont_fix"],
    confirmed: ["mitigated", "wont_fix"],
    mitigated: ["verified", "confirmed", "wont_fix"],
    verified: ["confirmed"],
    wont_fix: ["confirmed"],
  };
  const LABEL = { wont_fix: "won't fix" };
  const $ = (id) => document.getElementById(id);
  const keyInput = $("api-key");
  let current = null; // the finding shown in the detail pane

  const { storageGet, storageSet, element, when, requestJson } = window.Bastion;
  function showError(message) {
    $("error-message").textContent = message;
    $("error").hidden = false;
  }
  function hideError() { $("error").hidden = true; }
  function statusLabel(status) { return LABEL[status] || status; }

  // The API with the pasted key: GET, or POST (`options.method` to change it) when `options.body` is set.
  function api(path, options) {
    const body = options ? options.body : undefined;
    const method = body === undefined ? "GET" : (options.method || "POST");
    return requestJson(method, path, keyInput.value.trim(), body);
  }

  // -- the conversation editor ----------------------------------------------------------------------------

  function addMessage(role, content) {
    const list = $("messages");
    const index = list.children.length + 1;
    const item = element("li", "message-row");
    item.dataset.testid = "message-row";
    const roleId = `message-role-${index}`;
    const textId = `message-content-${index}`;
    const roleLabel = element("label", "visually-hidden", `Message ${index} role`);
    roleLabel.htmlFor = roleId;
    const select = element("select", "message-role");
    select.id = roleId;
    select.dataset.testid = "message-role";
    for (const value of ["user", "assistant", "system"]) {
      const option = element("option", "", value);
      option.value = value;
      if (value === role) option.selected = true;
      select.appendChild(option);
    }
    const textLabel = element("label", "visually-hidden", `Message ${index} text`);
    textLabel.htmlFor = textId;
    const text = element("textarea", "message-content");
    text.id = textId;
    text.rows = 2;
    text.value = content || "";
    text.dataset.testid = "message-content";
    text.placeholder = role === "assistant" ? "What the model answered" : "What was sent";
    const remove = element("button", "secondary remove", "Remove");
    remove.type = "button";
    remove.dataset.testid = "remove-message";
    remove.addEventListener("click", () => { item.remove(); });
    item.append(roleLabel, select, textLabel, text, remove);
    list.appendChild(item);
    return text;
  }

  function conversation() {
    const messages = [];
    for (const row of $("messages").children) {
      const content = row.querySelector("textarea").value;
      if (content.trim()) messages.push({ role: row.querySelector("select").value, content });
    }
    return messages;
  }

  function resetForm() {
    $("finding-form").reset();
    $("messages").replaceChildren();
    addMessage("user", "");
    addMessage("assistant", "");
  }

  async function submitFinding(event) {
    event.preventDefault();
    hideError();
    const status = $("submit-status");
    const body = {
      summary: $("summary").value.trim(),
      category: $("category").value,
      severity: $("severity").value,
      target: $("target").value.trim(),
      reproduction: $("reproduction").value.trim(),
      conversation: conversation(),
    };
    if (!body.summary) { status.textContent = "Write a one-line summary."; $("summary").focus(); return; }
    if (!body.category) { status.textContent = "Choose a category."; $("category").focus(); return; }
    if (!body.conversation.some((m) => m.role === "user")) {
      status.textContent = "Add at least one user message.";
      return;
    }
    $("submit").disabled = true;
    status.textContent = "Submitting…";
    try {
      const finding = await api(API, { body });
      status.textContent = `Submitted ${finding.id} (status ${finding.status}).`;
      resetForm();
      await loadFindings();
      await showFinding(finding.id);
    } catch (err) {
      status.textContent = "Not submitted.";
      showError(err.message);
    } finally {
      $("submit").disabled = false;
    }
  }

  // -- the list and the detail pane -----------------------------------------------------------------------

  function pill(status) {
    const span = element("span", `status-pill s-${status}`, statusLabel(status));
    span.dataset.status = status;
    return span;
  }

  async function loadFindings() {
    if (!keyInput.value.trim()) { $("empty").textContent = "Paste an API key to see findings."; return; }
    const filter = $("status-filter").value;
    const query = filter ? `?status=${encodeURIComponent(filter)}` : "";
    try {
      const body = await api(API + query);
      const rows = body.data.map((finding) => {
        const row = element("tr", "finding-row");
        row.dataset.testid = "finding-row";
        row.dataset.id = finding.id;
        row.tabIndex = 0;
        const statusCell = element("td");
        statusCell.appendChild(pill(finding.status));
        row.append(
          statusCell,
          element("td", `sev sev-${finding.severity}`, finding.severity),
          element("td", "", finding.category),
          element("td", "summary", finding.summary),
          element("td", "when", when(finding.updated_at)),
        );
        if (current && current.id === finding.id) row.classList.add("selected");
        row.addEventListener("click", () => showFinding(finding.id));
        row.addEventListener("keydown", (event) => { if (event.key === "Enter") showFinding(finding.id); });
        return row;
      });
      $("findings").replaceChildren(...rows);
      $("empty").hidden = rows.length > 0;
      $("empty").textContent = "No findings to show.";
    } catch (err) {
      showError(err.message);
    }
  }

  function renderDetail(finding) {
    current = finding;
    $("detail").hidden = false;
    $("detail-title").textContent = finding.summary;
    const statusNode = $("detail-status");
    statusNode.className = `status-pill s-${finding.status}`;
    statusNode.textContent = statusLabel(finding.status);
    statusNode.dataset.status = finding.status;
    $("detail-meta").textContent =
      `${finding.id} · ${finding.category} · ${finding.severity} · target ${finding.target || "-"} · ` +
      `reported by ${finding.reporter || "-"} on ${when(finding.created_at)}` +
      (finding.resolution ? ` · won't fix: ${finding.resolution}` : "");
    $("detail-conversation").replaceChildren(
      ...finding.conversation.map((m) => {
        const item = element("li", `mini ${m.role}`);
        item.append(element("strong", "", m.role + ": "), element("span", "", m.content || ""));
        return item;
      }),
    );
    $("detail-reproduction").textContent = finding.reproduction || "—";
    $("detail-history").replaceChildren(
      ...finding.history.map((e) => {
        const item = element("li", "history-item");
        item.dataset.testid = "history-item";
        const move = e.from_status ? `${statusLabel(e.from_status)} → ${statusLabel(e.to_status)}` : "submitted";
        item.append(
          element("span", "when", when(e.created_at)),
          element("strong", "", ` ${e.action}: ${move}`),
          element("span", "hint", ` by ${e.actor}` + (e.audit_seq ? ` · audit #${e.audit_seq}` : "")),
        );
        if (e.reason) item.append(element("div", "reason", e.reason));
        if (e.evidence && e.evidence.response !== undefined) {
          item.append(element("div", "evidence", `answer: ${e.evidence.response}`));
        }
        return item;
      }),
    );
    $("detail-comments").replaceChildren(
      ...finding.comments.map((c) => {
        const item = element("li", "comment");
        item.dataset.testid = "comment";
        item.append(element("span", "hint", `${c.author} · ${when(c.created_at)}`), element("p", "", c.body));
        return item;
      }),
    );
    const select = $("triage-status");
    select.replaceChildren(
      ...(NEXT[finding.status] || []).map((s) => {
        const option = element("option", "", statusLabel(s));
        option.value = s;
        return option;
      }),
    );
    for (const row of $("findings").children) row.classList.toggle("selected", row.dataset.id === finding.id);
  }

  async function showFinding(id) {
    hideError();
    try {
      renderDetail(await api(`${API}/${encodeURIComponent(id)}`));
    } catch (err) {
      showError(err.message);
    }
  }

  async function triage(event) {
    event.preventDefault();
    if (!current) return;
    hideError();
    const body = { status: $("triage-status").value };
    const reason = $("triage-reason").value.trim();
    if (reason) body.reason = reason;
    $("triage-button").disabled = true;
    try {
      await api(`${API}/${encodeURIComponent(current.id)}/triage`, { body });
      $("triage-reason").value = "";
      await showFinding(current.id);
      await loadFindings();
    } catch (err) {
      showError(err.message);
    } finally {
      $("triage-button").disabled = false;
    }
  }

  async function comment(event) {
    event.preventDefault();
    if (!current) return;
    hideError();
    const text = $("comment-body").value.trim();
    if (!text) return;
    $("comment-button").disabled = true;
    try {
      await api(`${API}/${encodeURIComponent(current.id)}/comments`, { body: { body: text } });
      $("comment-body").value = "";
      await showFinding(current.id);
    } catch (err) {
      showError(err.message);
    } finally {
      $("comment-button").disabled = false;
    }
  }

  keyInput.value = storageGet(KEY_STORAGE);
  keyInput.addEventListener("change", () => {
    storageSet(KEY_STORAGE, keyInput.value.trim());
    current = null;
    $("detail").hidden = true;
    hideError();
    loadFindings();
  });
  $("add-message").addEventListener("click", () => {
    const last = $("messages").lastElementChild;
    const role = last && last.querySelector("select").value === "user" ? "assistant" : "user";
    addMessage(role, "").focus();
  });
  $("finding-form").addEventListener("submit", submitFinding);
  $("triage-form").addEventListener("submit", triage);
  $("comment-form").addEventListener("submit", comment);
  $("refresh").addEventListener("click", loadFindings);
  $("status-filter").addEventListener("change", loadFindings);
  resetForm();
  loadFindings();
})();
