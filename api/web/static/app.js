// The web page: ask (streamed answers with citations), search (hits with each leg's score),
// documents (status, upload, delete), the health of each part. Plain JavaScript, no build step;
// it talks only to the server that served it.
"use strict";

const TEXT = {
  en: {
    skip: "Skip to content", nav_ask: "Ask", nav_search: "Search", nav_documents: "Documents", nav_api: "API",
    question_label: "Your question", question_ph: "Ask your notes… (press / to focus)", ask: "Ask",
    new_chat: "New conversation", close: "Close", search_label: "Search", search_ph: "Search the notes…",
    search: "Search", drop: "Drop files here or choose them (.md .markdown .txt .pdf)",
    th_file: "File", th_status: "Status", th_chunks: "Chunks", th_pages: "Pages", th_notes: "Notes",
    key_title: "API key", key_text: "This server needs an API key. It is kept only until this tab is closed.",
    key_wrong: "That key was refused.", ok: "OK", sources: "Sources", page: "page", delete: "Delete",
    confirm_delete: "Delete {0} from every index?", thinking: "Searching your notes…",
    status_indexed: "indexed", status_failed: "failed", status_pending: "pending",
    uploaded: "uploaded", indexing: "indexing…", done: "done", failed: "failed",
    n_docs: "{0} files", n_index: "{0} files · {1} chunks", took: "{0} hits in {1} ms", no_hits: "No hits.", heading: "Section",
    health_index: "index", health_vectors: "vectors", health_llm: "LLM", quote_in_file: "Quoted from the file",
    not_found_on_page: "The passage was not found on the rendered page; its stored text is marked below.",
    rewrite: "Searched for", extractive: "extractive answer (no model)", error: "Error",
    encoding: "encoding",
  },
  zh: {
    skip: "跳到正文", nav_ask: "提问", nav_search: "搜索", nav_documents: "文档", nav_api: "API",
    question_label: "你的问题", question_ph: "向你的笔记提问…（按 / 聚焦）", ask: "提问",
    new_chat: "新对话", close: "关闭", search_label: "搜索", search_ph: "搜索笔记…",
    search: "搜索", drop: "把文件拖到这里，或点击选择（.md .markdown .txt .pdf）",
    th_file: "文件", th_status: "状态", th_chunks: "分块", th_pages: "页数", th_notes: "备注",
    key_title: "API 密钥", key_text: "此服务器需要 API 密钥。密钥只保存到关闭此标签页为止。",
    key_wrong: "密钥被拒绝。", ok: "确定", sources: "来源", page: "第几页", delete: "删除",
    confirm_delete: "从所有索引中删除 {0}？", thinking: "正在检索笔记…",
    status_indexed: "已索引", status_failed: "失败", status_pending: "等待中",
    uploaded: "已上传", indexing: "索引中…", done: "完成", failed: "失败",
    n_docs: "{0} 个文件", n_index: "{0} 个文件 · {1} 个分块", took: "{0} 条结果，用时 {1} 毫秒", no_hits: "没有结果。", heading: "章节",
    health_index: "索引", health_vectors: "向量库", health_llm: "模型", quote_in_file: "文件中的原文",
    not_found_on_page: "在渲染的页面上没有找到这段文字；下面标出了它的存储文本。",
    rewrite: "检索用的问题", extractive: "抽取式回答（未用模型）", error: "错误",
    encoding: "编码",
  },
};

let lang = localStorage.getItem("rag-lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");

function t(key, ...args) {
  const s = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
  return s.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)]));
}

function applyText() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  $("#lang").textContent = lang === "zh" ? "English" : "中文";
}

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// -- API access with the key kept in sessionStorage ------------------------------------------------

const KEY = "rag-api-key";
let keyPrompt = null;

function authHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: "Bearer " + key } : extra;
}

function askForKey(refused) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  $("#key-error").hidden = !refused;
  $("#api-key").value = "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = $("#api-key").value.trim();
      keyPrompt = null;
      if (key) sessionStorage.setItem(KEY, key);
      resolve(Boolean(key));
    }, { once: true });
  });
  dialog.showModal();
  $("#api-key").focus();
  return keyPrompt;
}

// fetch with the key; on 401 asks for a key (once per refusal) and tries again.
async function api(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
    if (res.status !== 401 || attempt >= 3) return res;
    const had = Boolean(sessionStorage.getItem(KEY));
    if (had) sessionStorage.removeItem(KEY);
    if (!(await askForKey(had))) return res;
  }
}

async function errorText(res) {
  try {
    const body = await res.json();
    const e = body.error || {};
    return [e.message || res.statusText, e.hint].filter(Boolean).join(" — ");
  } catch {
    return `HTTP ${res.status}`;
  }
}

// Server-sent events from a fetch response body: yields {event, data}.
async function* readEvents(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    buffer = buffer.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
    if (done) return;
  }
}

// -- views -----------------------------------------------------------------------------------------

function showView(view, push) {
  if (!["ask", "search", "documents"].includes(view)) view = "ask";
  document.documentElement.dataset.view = view;
  for (const v of ["ask", "search", "documents"]) $("#view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const columns = $("#view-" + view + " .columns");
  if (columns) columns.append($("#source-pane"));
  if (push) history.pushState({ view }, "", view === "ask" ? "/" : "/" + view);
  if (view === "documents") loadDocuments();
  if (view === "ask") $("#question").focus();
  if (view === "search") $("#search-q").focus();
}

// -- ask -------------------------------------------------------------------------------------------

const turns = []; // {question, answer} of the conversation so far
const CITE_RE = /([[【])\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*([\]】])/g;

function citationLink(c) {
  const where = c.page ? `${c.source}, ${t("page")} ${c.page}` : c.source;
  return el("a", {
    href: "#", class: "cite", "data-testid": "citation", "data-chunk": c.chunk_id, title: where,
    onclick: (e) => { e.preventDefault(); openSource(c.chunk_id, c.quote, e.currentTarget); },
  }, `[${c.n}]`);
}

function renderAnswer(node, text, citations) {
  const byN = new Map(citations.map((c) => [c.n, c]));
  node.textContent = "";
  let last = 0;
  for (const m of text.matchAll(CITE_RE)) {
    const nums = m[2].split(/\s*[,，、]\s*/).map(Number);
    if (!nums.some((n) => byN.has(n))) continue;
    node.append(text.slice(last, m.index));
    nums.forEach((n, i) => {
      if (i) node.append(" ");
      node.append(byN.has(n) ? citationLink(byN.get(n)) : `[${n}]`);
    });
    last = m.index + m[0].length;
  }
  node.append(text.slice(last));
}

function renderSources(list, citations) {
  list.textContent = "";
  for (const c of citations) {
    const link = citationLink(c);
    link.textContent = `[${c.n}] ${c.source}${c.page ? ` · ${t("page")} ${c.page}` : ""}`;
    list.append(el("li", {}, link, c.heading ? el("span", { class: "heading", text: " " + c.heading }) : null,
      c.quote ? el("q", { text: c.quote }) : null));
  }
}

async function ask(question) {
  const history = turns.slice(-6).flatMap((x) => [
    { role: "user", content: x.question }, { role: "assistant", content: x.answer },
  ]);
  const answerNode = el("div", { class: "answer", "data-testid": "answer", "aria-busy": "true" });
  const status = el("p", { class: "meta", text: t("thinking") });
  const sourcesList = el("ol", { class: "sources" });
  const turn = el("li", { class: "turn" }, el("p", { class: "q", text: question }), status, answerNode, sourcesList);
  $("#turns").append(turn);
  turn.scrollIntoView({ block: "end" });
  let text = "";
  let citations = [];
  try {
    const res = await api("/v1/ask", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ question, stream: true, history }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    for await (const { event, data } of readEvents(res)) {
      if (event === "token") {
        text += data.text;
        answerNode.textContent = text;
        status.textContent = "";
      } else if (event === "rewrite") {
        if (data.standalone && data.standalone !== question) status.textContent = `${t("rewrite")}: ${data.standalone}`;
      } else if (event === "citations") {
        citations = data.citations || [];
        renderAnswer(answerNode, text, citations);
        renderSources(sourcesList, citations);
      } else if (event === "final") {
        text = data.answer;
        citations = data.citations || citations;
        renderAnswer(answerNode, text, citations);
        renderSources(sourcesList, citations);
        const notes = [data.note, data.kind === "extractive" ? t("extractive") : null].filter(Boolean);
        const standalone = data.rewrite && data.rewrite.standalone;
        if (standalone && standalone !== question) notes.unshift(`${t("rewrite")}: ${standalone}`);
        status.textContent = notes.join(" · ");
      } else if (event === "error") {
        throw new Error((data.error && data.error.message) || "error");
      }
    }
    turns.push({ question, answer: text });
  } catch (err) {
    status.textContent = `${t("error")}: ${err.message}`;
    status.classList.add("error");
  } finally {
    answerNode.removeAttribute("aria-busy");
  }
}

// -- the source view -------------------------------------------------------------------------------

let sourceOpener = null;

function closeSource() {
  $("#source-pane").hidden = true;
  if (sourceOpener) sourceOpener.focus();
}

async function openSource(chunkId, quote, opener) {
  sourceOpener = opener || null;
  const pane = $("#source-pane");
  const view = $("#source-view");
  pane.hidden = false;
  view.textContent = t("thinking");
  const qs = quote ? "?quote=" + encodeURIComponent(quote) : "";
  const res = await api(`/v1/chunks/${encodeURIComponent(chunkId)}/source${qs}`);
  if (!res.ok) {
    view.textContent = `${t("error")}: ${await errorText(res)}`;
    return;
  }
  const s = await res.json();
  $("#source-title").textContent = s.page ? `${s.source} · ${t("page")} ${s.page}/${s.pages ?? "?"}` : s.source;
  view.textContent = "";
  if (s.heading_path.length) {
    view.append(el("nav", { class: "crumbs", "aria-label": t("heading"), "data-testid": "heading-path" },
      ...s.heading_path.flatMap((h, i) => (i ? [el("span", { text: " › " }), el("span", { text: h })] : [el("span", { text: h })]))));
  }
  let mark;
  if (s.format === "pdf" && s.page) {
    if (s.image) {
      const img = el("img", { src: s.image, alt: `${s.source}, ${t("page")} ${s.page}`, class: "page" });
      view.append(el("div", { class: "page-wrap" }, img));
    }
    if (s.quote) view.append(el("p", { class: "quote" }, el("strong", { text: t("quote_in_file") + ": " }), el("q", { text: s.quote })));
    if (s.error) view.append(el("p", { class: "meta", text: s.error }));
    mark = markedText(view, s.page_text, s.marks);
    if (s.image && s.highlight_top !== null) {
      // bring the highlight on the page image into view, the pane's header staying on top
      const img = $("img.page", view);
      const scroll = () => {
        const top = img.offsetTop + s.highlight_top * img.clientHeight;
        pane.scrollTop = Math.max(0, top - pane.clientHeight / 3);
        if (pane.getBoundingClientRect().top > window.innerHeight / 2) pane.scrollIntoView({ block: "start" });
      };
      if (img.complete) scroll(); else img.addEventListener("load", scroll, { once: true });
      view.focus({ preventScroll: true });
      return;
    }
  } else {
    mark = markedText(view, s.text, [[s.start, s.end]]);
  }
  view.focus({ preventScroll: true });
  if (mark) mark.scrollIntoView({ block: "center" });
}

// `text` as a <pre> with each [a, b) range in a <mark>; returns the first mark.
function markedText(view, text, ranges) {
  const pre = el("pre", { class: "doc" });
  let pos = 0;
  let first = null;
  for (const [a, b] of ranges) {
    if (a < pos || b <= a) continue;
    pre.append(text.slice(pos, a));
    const m = el("mark", { text: text.slice(a, b) });
    pre.append(m);
    first = first || m;
    pos = b;
  }
  pre.append(text.slice(pos));
  view.append(pre);
  return first;
}

// -- search ----------------------------------------------------------------------------------------

function fmt(x) {
  return x === null || x === undefined ? "—" : Number(x).toFixed(3);
}

async function search(query, mode) {
  const list = $("#hits");
  list.textContent = "";
  $("#search-meta").textContent = t("thinking");
  const res = await api("/v1/search", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query, k: 20, mode }),
  });
  if (!res.ok) {
    $("#search-meta").textContent = `${t("error")}: ${await errorText(res)}`;
    return;
  }
  const body = await res.json();
  $("#search-meta").textContent = body.hits.length ? t("took", body.hits.length, body.took_ms) : t("no_hits");
  for (const h of body.hits) {
    const open = el("a", {
      href: "#", class: "hit-source", "data-testid": "hit", title: h.source,
      onclick: (e) => { e.preventDefault(); openSource(h.chunk_id, null, e.currentTarget); },
    }, `${h.rank}. ${h.source}${h.page ? ` · ${t("page")} ${h.page}` : ""}`);
    const scores = el("dl", { class: "scores", "data-testid": "scores" },
      ...["fused", "sparse", "dense", "graph"].flatMap((leg) => [el("dt", { text: leg }), el("dd", { "data-leg": leg, text: fmt(h.scores[leg]) })]));
    list.append(el("li", { class: "hit" }, open, h.heading ? el("span", { class: "heading", text: h.heading }) : null,
      scores, el("p", { class: "snippet", text: h.text.length > 400 ? h.text.slice(0, 400) + "…" : h.text })));
  }
}

// -- documents -------------------------------------------------------------------------------------

async function loadDocuments() {
  const res = await api("/v1/documents");
  const tbody = $("#doc-rows");
  if (!res.ok) {
    $("#doc-meta").textContent = `${t("error")}: ${await errorText(res)}`;
    return;
  }
  const body = await res.json();
  $("#doc-meta").textContent = t("n_docs", body.total);
  tbody.textContent = "";
  for (const d of body.documents) {
    const notes = [...(d.notes || [])];
    if (d.encoding && d.encoding.toLowerCase() !== "utf-8" && d.encoding.toLowerCase() !== "ascii") notes.unshift(`${t("encoding")}: ${d.encoding}`);
    if (d.error) notes.unshift(d.error);
    const del = d.doc_id
      ? el("button", { type: "button", class: "secondary", "data-testid": "delete", "aria-label": `${t("delete")} ${d.source}`,
        onclick: () => deleteDocument(d) }, t("delete"))
      : null;
    tbody.append(el("tr", { "data-status": d.status, "data-source": d.source },
      el("td", { class: "file", title: d.path }, d.source, d.uploaded ? el("small", { text: " · " + t("uploaded") }) : null),
      el("td", {}, el("span", { class: "badge " + d.status, "data-testid": "status", text: t("status_" + d.status) })),
      el("td", { class: "num", text: d.chunks ?? "" }), el("td", { class: "num", text: d.pages ?? "" }),
      el("td", { class: "notes" }, ...notes.map((n) => el("div", { text: n }))),
      el("td", {}, del)));
  }
}

async function deleteDocument(d) {
  if (!confirm(t("confirm_delete", d.source))) return;
  const res = await api(`/v1/documents/${encodeURIComponent(d.doc_id)}`, { method: "DELETE" });
  if (!res.ok && res.status !== 202) alert(await errorText(res));
  loadDocuments();
}

function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const bar = el("progress", { max: 100, value: 0 });
  const label = el("span", { text: [...files].map((f) => f.name).join(", ") });
  const state = el("span", { class: "meta" });
  const item = el("li", { "data-testid": "upload-item" }, label, bar, state);
  $("#uploads").prepend(item);
  const send = () => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/documents");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); };
    xhr.onload = async () => {
      if (xhr.status === 401) {
        const had = Boolean(sessionStorage.getItem(KEY));
        if (had) sessionStorage.removeItem(KEY);
        if (await askForKey(had)) send();
        return;
      }
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status !== 202) {
        state.textContent = `${t("failed")}: ${(body.error && body.error.message) || xhr.status}`;
        item.dataset.state = "failed";
        return;
      }
      bar.value = 100;
      state.textContent = t("indexing");
      await waitJob(body.job.id, state, item);
    };
    xhr.onerror = () => { state.textContent = t("failed"); item.dataset.state = "failed"; };
    xhr.send(form);
  };
  send();
}

async function waitJob(id, state, item) {
  for (let i = 0; i < 600; i++) {
    const res = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    const job = res.ok ? await res.json() : { status: "failed" };
    if (job.status === "done" || job.status === "failed") {
      const bad = (job.result && job.result.failed) || [];
      const failed = job.status === "failed" || bad.length > 0;
      const names = bad.map((f) => String(f.path || "").split(/[\\/]/).pop()).join(", ");
      state.textContent = job.status === "failed" ? t("failed") : bad.length ? `${t("done")} · ${t("failed")}: ${names}` : t("done");
      item.dataset.state = failed ? "failed" : "done";
      loadDocuments();
      return;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

// -- health ----------------------------------------------------------------------------------------

async function loadHealth() {
  let body;
  try {
    body = await (await fetch("/health")).json();
  } catch {
    return;
  }
  const box = $(".health");
  box.textContent = "";
  const pill = (name, ok, detail) => el("span", { class: "pill " + ok, title: detail, "data-part": name }, `${t("health_" + name)}: ${detail}`);
  const index = body.index;
  box.append(pill("index", index ? (index.in_sync ? "ok" : "warn") : "bad",
    index ? t("n_index", index.documents, index.chunks) : body.reason || "unavailable"));
  const vs = body.vector_store;
  box.append(pill("vectors", vs ? (vs.status === "ok" ? "ok" : "off") : "bad", vs ? vs.status : "—"));
  const llm = body.llm || {};
  box.append(pill("llm", llm.status === "ok" ? "ok" : llm.status === "disabled" ? "off" : "warn",
    `${llm.status || "?"}${llm.model ? " · " + llm.model : ""}`));
  box.title = body.reason || body.status;
}

// -- wiring ----------------------------------------------------------------------------------------

function wire() {
  applyText();
  $("#lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("rag-lang", lang);
    applyText();
    loadHealth();
  });
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      showView(a.dataset.nav, true);
    });
  }
  window.addEventListener("popstate", () => showView(location.pathname.replace(/^\//, "") || "ask", false));
  $("#ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("#question").value.trim();
    if (!q) return;
    $("#question").value = "";
    ask(q);
  });
  $("#new-chat").addEventListener("click", () => { turns.length = 0; $("#turns").textContent = ""; closeSource(); $("#question").focus(); });
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("#search-q").value.trim();
    if (q) search(q, $("#search-mode").value);
  });
  $("#source-close").addEventListener("click", closeSource);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("#source-pane").hidden && !$("#key-dialog").open) closeSource();
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (e.key === "/" && !typing) {
      e.preventDefault();
      (document.documentElement.dataset.view === "search" ? $("#search-q") : $("#question")).focus();
    }
  });
  const input = $("#upload");
  input.addEventListener("change", () => { upload([...input.files]); input.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload([...e.dataTransfer.files]);
  });
  showView(document.documentElement.dataset.view, false);
  loadHealth();
  setInterval(loadHealth, 30000);
}

document.addEventListener("DOMContentLoaded", wire);
