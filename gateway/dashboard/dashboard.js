// The mnx-gateway dashboard: one hand-written module, no framework, no build step.
//
// It is a client of the gateway's REST API like any other: every call carries the project key
// the user typed (kept in this tab's sessionStorage only) and the server checks its scopes.
// GET /keys/self says which scopes the key has, so the page does not offer what would be refused.
//
// Safety rule for everything below: text that comes from the API is only ever put on the page
// as text (the h() helper appends strings as text nodes, attributes go through setAttribute),
// never parsed as HTML. There is no innerHTML in this file.

const API = document.body.dataset.api;
const KEY_STORAGE = "mnx.dashboard.key";
const view = document.getElementById("view");
const statusLine = document.getElementById("status");

let me = null; // {project_id, key_name, scopes} of the signed-in key
let leaving = []; // cleanups of the current view (an open event stream)

// -- building the page --------------------------------------------------------------------

// An element: h("a", {href: "#/x", class: "y", onclick: fn}, "text", child, [more]).
function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.append(child);
    else parent.append(document.createTextNode(String(child)));
  }
}

function say(message, isError = false) {
  statusLine.textContent = message;
  statusLine.classList.toggle("is-error", isError);
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function asText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

// A table; columns: [{label, value: row => text or node, num?}]. Narrow screens stack it.
function table(caption, columns, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", {class: "muted"}, empty);
  return h("div", {class: "table-wrap"}, h("table", {class: "stack"},
    h("caption", {class: "muted"}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {scope: "col", class: c.num ? "num" : null}, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) =>
      h("td", {"data-label": c.label, class: c.num ? "num" : (c.wrap ? "text" : null)}, c.value(row))))))));
}

// A labelled control; each gets an id of its own so that its label names it.
let fieldCount = 0;
function field(label, input) {
  input.id = input.id || `f${++fieldCount}-` + label.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("div", {class: "field"}, h("label", {for: input.id}, label), input);
}

function errorBox(error) {
  return h("p", {class: "error", role: "alert"}, error.message || String(error));
}

// -- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function key() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function call(method, path, {query, body, headers, raw, signal} = {}) {
  const url = new URL(API + path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const sent = {"x-mnexium-key": key() || "", "Accept": "application/json", ...(headers || {})};
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(url, {method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store", signal});
  if (raw && response.ok) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const message = (data && (data.message || (data.error && data.error.message))) || `${response.status} ${response.statusText}`;
    if (response.status === 401) signOut(message);
    throw new ApiError(response.status, data && data.error, message);
  }
  return data;
}

const get = (path, query, headers) => call("GET", path, {query, headers});

// Whether the signed-in key holds ``scope`` for an HTTP method: the rule of gateway/auth.py
// (Principal.require): "*", the scope itself, "<resource>:*", or the method's coarse scope.
const COARSE = {GET: "read", POST: "write", PUT: "write", PATCH: "write", DELETE: "delete"};
function can(scope, method = "GET") {
  if (!me) return false;
  const held = new Set(me.scopes);
  const resource = scope.split(":")[0];
  return held.has("*") || held.has(scope) || held.has(resource + ":*") || held.has(COARSE[method]);
}

// -- signing in ---------------------------------------------------------------------------

const signInSection = document.getElementById("sign-in");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signOutButton = document.getElementById("sign-out");

async function signIn(presented) {
  sessionStorage.setItem(KEY_STORAGE, presented);
  try {
    me = await get("/keys/self");
  } catch (error) {
    sessionStorage.removeItem(KEY_STORAGE);
    me = null;
    throw error;
  }
  who.textContent = `${me.project_id} · ${me.key_name}`;
  who.title = "Scopes: " + me.scopes.join(", ");
  signInSection.hidden = true;
  nav.hidden = false;
  signOutButton.hidden = false;
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  me = null;
  nav.hidden = true;
  signOutButton.hidden = true;
  who.textContent = "";
  cleanUp();
  view.replaceChildren();
  signInSection.hidden = false;
  document.getElementById("sign-in-error").textContent = reason || "";
  document.getElementById("project-key").focus();
}

document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("project-key");
  const errorLine = document.getElementById("sign-in-error");
  errorLine.textContent = "";
  if (!input.value.trim()) {
    errorLine.textContent = "Type a project key.";
    input.focus();
    return;
  }
  try {
    await signIn(input.value.trim());
    input.value = "";
    if (!location.hash || location.hash === "#") location.hash = "#/subjects";
    else render();
  } catch (error) {
    errorLine.textContent = error.status === 401 ? "That key is not valid here." : error.message;
    input.focus();
  }
});
signOutButton.addEventListener("click", () => signOut("Signed out."));

// -- confirmation dialog ------------------------------------------------------------------

// Resolves true when confirmed; with ``typed``, only once the user typed exactly that.
function confirmAction({title, text, typed, ok}) {
  const dialog = document.getElementById("confirm");
  const input = document.getElementById("confirm-input");
  const label = document.getElementById("confirm-label");
  const okButton = document.getElementById("confirm-ok");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  okButton.textContent = ok;
  input.value = "";
  input.hidden = label.hidden = !typed;
  label.textContent = typed ? `Type ${typed} to confirm` : "";
  okButton.disabled = Boolean(typed);
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const onInput = () => { okButton.disabled = input.value !== typed; };
    const finish = (answer) => {
      input.removeEventListener("input", onInput);
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      if (opener && opener.focus) opener.focus();
      resolve(answer);
    };
    const form = document.getElementById("confirm-form");
    const cancel = document.getElementById("confirm-cancel");
    const onSubmit = (event) => { event.preventDefault(); if (!okButton.disabled) finish(true); };
    const onCancel = (event) => { event.preventDefault(); finish(false); };
    input.addEventListener("input", onInput);
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    (typed ? input : cancel).focus();
  });
}

// -- routing ------------------------------------------------------------------------------

// "#/subject/<id>/<tab>?q=x" -> {parts: ["subject", id, tab], params}
function currentRoute() {
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  return {parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search || "")};
}

function link(parts, params) {
  const query = params ? "?" + new URLSearchParams(params).toString() : "";
  return "#/" + parts.map(encodeURIComponent).join("/") + query;
}

// Go to ``hash``; the same one again (a repeated search) renders the page again.
function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

const VIEWS = {
  subjects: subjectsView, subject: subjectView, chat: chatView, search: searchView,
  prompts: (route, page) => scopedTextView(route, page, PROMPTS),
  policies: (route, page) => scopedTextView(route, page, POLICIES),
  jobs: jobsView, events: eventsView,
};

function cleanUp() {
  for (const leave of leaving) leave();
  leaving = [];
}

async function render() {
  cleanUp();
  if (!me) return;
  const route = currentRoute();
  const name = VIEWS[route.parts[0]] ? route.parts[0] : "subjects";
  for (const anchor of nav.querySelectorAll("a")) {
    const current = anchor.getAttribute("href") === "#/" + name ||
      (name === "subject" || name === "chat") && anchor.getAttribute("href") === "#/subjects";
    if (current) anchor.setAttribute("aria-current", "page"); else anchor.removeAttribute("aria-current");
  }
  const page = h("div", {});
  view.replaceChildren(page);
  try {
    await VIEWS[name](route, page);
  } catch (error) {
    page.append(errorBox(error));
  }
  // Focus the page's heading so keyboard and screen-reader users start at the new content.
  const heading = page.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

window.addEventListener("hashchange", render);

// -- subjects -----------------------------------------------------------------------------

async function subjectsView(route, page) {
  const q = route.params.get("q") || "";
  page.append(h("h1", {}, "Subjects"));
  const search = h("input", {type: "search", name: "q", value: q, autocomplete: "off"});
  page.append(h("form", {class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    navigate(link(["subjects"], search.value.trim() ? {q: search.value.trim()} : null));
  }}, field("Find a subject (part of its id)", search), h("button", {type: "submit"}, "Search")));
  const exact = h("input", {type: "text", name: "subject", autocomplete: "off"});
  page.append(h("form", {class: "inline", onsubmit: (event) => {
    event.preventDefault();
    if (exact.value.trim()) location.hash = link(["subject", exact.value.trim(), "memories"]);
  }}, field("Open a subject by its exact id", exact), h("button", {type: "submit", class: "secondary"}, "Open")));
  if (!can("subjects:read")) {
    page.append(h("p", {class: "muted"}, "This key cannot list subjects (scope subjects:read); open one by its id."));
    return;
  }
  const answer = await get("/subjects", {q, limit: 100});
  page.append(table(q ? `Subjects matching “${q}”` : "Subjects, most recently active first", [
    {label: "Subject", value: (s) => h("a", {href: link(["subject", s.subject_id, "memories"])}, s.subject_id)},
    {label: "Memories", value: (s) => s.memories, num: true},
    {label: "Chats", value: (s) => s.chats, num: true},
    {label: "Last active", value: (s) => when(s.last_active) || "never chatted"},
  ], answer.data, q ? "No subject matches." : "No subject has chatted yet."));
  if (!answer.complete) {
    page.append(h("p", {class: "muted"}, "Listed from the latest chats; a subject not shown can be opened by its id."));
  }
}

// -- one subject --------------------------------------------------------------------------

const SUBJECT_TABS = [
  ["memories", "Memories"], ["history", "Superseded"], ["profile", "Profile"], ["claims", "Claims"],
  ["state", "State"], ["records", "Records"], ["chats", "Chats"],
];

async function subjectView(route, page) {
  const subject = route.parts[1] || "";
  const tab = SUBJECT_TABS.some(([id]) => id === route.parts[2]) ? route.parts[2] : "memories";
  page.append(h("h1", {}, "Subject ", h("span", {class: "text"}, subject)));
  const actions = h("div", {class: "actions"});
  if (can("subjects:export")) {
    actions.append(h("button", {type: "button", class: "secondary", onclick: () => exportSubject(subject)},
      "Export (JSONL)"));
  }
  if (can("subjects:delete", "DELETE")) {
    actions.append(h("button", {type: "button", class: "danger", onclick: () => eraseSubject(subject)},
      "Erase subject…"));
  }
  page.append(actions);
  page.append(h("nav", {"aria-label": "Subject sections"}, h("ul", {class: "tabs"}, SUBJECT_TABS.map(([id, label]) =>
    h("li", {}, h("a", {href: link(["subject", subject, id]), "aria-current": id === tab ? "page" : null}, label))))));
  const body = h("section", {"aria-label": SUBJECT_TABS.find(([id]) => id === tab)[1]});
  page.append(body);
  await SUBJECT_SECTIONS[tab](subject, body, route);
}

const SUBJECT_SECTIONS = {memories: memoriesSection, history: supersededSection, profile: profileSection,
  claims: claimsSection, state: stateSection, records: recordsSection, chats: chatsSection};

// How fast a memory fades (scoring.py: half-life, twice as fast for temporal ones), and since when.
function decay(memory) {
  const since = memory.last_seen_at || memory.created_at;
  return `${memory.is_temporal ? "temporal (fast)" : "normal"} · since ${when(since)}`;
}

function refused(body, scope) {
  body.append(h("p", {class: "muted"}, `This key lacks the ${scope} scope.`));
}

async function memoriesSection(subject, body, route) {
  if (!can("memories:read")) return refused(body, "memories:read");
  const offset = Number(route.params.get("offset") || 0);
  const pageSize = 50;
  const answer = await get("/memories", {subject_id: subject, limit: pageSize, offset});
  const mayDelete = can("memories:delete", "DELETE");
  const columns = [
    {label: "Memory", value: (m) => m.text, wrap: true},
    {label: "Kind", value: (m) => m.kind},
    {label: "Importance", value: (m) => m.importance, num: true},
    {label: "Confidence", value: (m) => m.confidence, num: true},
    {label: "Decay", value: decay},
    {label: "Recalls", value: (m) => m.seen_count ?? 0, num: true},
    {label: "Reinforced", value: (m) => m.reinforcement_count ?? 0, num: true},
    {label: "Created", value: (m) => when(m.created_at)},
  ];
  if (mayDelete) {
    columns.push({label: "Actions", value: (m) => h("button", {type: "button", class: "secondary",
      "aria-label": `Delete memory: ${m.text.slice(0, 60)}`, onclick: async () => {
        const sure = await confirmAction({title: "Delete this memory?", text: m.text, ok: "Delete"});
        if (!sure) return;
        await call("DELETE", `/memories/${encodeURIComponent(m.id)}`);
        say("Memory deleted.");
        render();
      }}, "Delete")});
  }
  body.append(table(`Active memories ${offset + 1}–${offset + answer.data.length}`, columns, answer.data,
    "No active memories."));
  body.append(pager(["subject", subject, "memories"], offset, pageSize, answer.data.length));
}

// "Newer" / "Older" links of a page of ``shown`` items at ``offset`` on the route ``path``.
function pager(path, offset, pageSize, shown) {
  const links = h("div", {class: "actions"});
  if (offset > 0) links.append(h("a", {href: link(path, {offset: Math.max(0, offset - pageSize)})}, "Newer"));
  if (shown === pageSize) links.append(h("a", {href: link(path, {offset: offset + pageSize})}, "Older"));
  return links;
}

// Superseded memories as chains, oldest version first, each ending at the memory in use now.
async function supersededSection(subject, body, route) {
  if (!can("memories:read")) return refused(body, "memories:read");
  // The latest superseded memories, a page at a time, and the memories that replaced them (the chains' ends).
  const offset = Number(route.params.get("offset") || 0);
  const pageSize = 50;
  const answer = await get("/memories/superseded",
    {subject_id: subject, limit: pageSize, offset, include_successors: "true"});
  const links = pager(["subject", subject, "history"], offset, pageSize, answer.data.length);
  if (!answer.data.length) {
    body.append(h("p", {class: "muted"}, "No memory of this subject has been superseded."), links);
    return;
  }
  const byId = new Map([...answer.data, ...answer.successors].map((m) => [m.id, m]));
  // Each chain is keyed by its end: follow superseded_by from every superseded memory.
  const chains = new Map();
  for (const memory of answer.data) {
    let end = memory;
    const seen = new Set();
    while (end.superseded_by && byId.has(end.superseded_by) && !seen.has(end.id)) {
      seen.add(end.id);
      end = byId.get(end.superseded_by);
    }
    if (!chains.has(end.id)) chains.set(end.id, new Set([end]));
    chains.get(end.id).add(memory);
  }
  const mayRestore = can("memories:write", "POST");
  body.append(h("p", {class: "muted"}, "Each timeline runs from the oldest version to the newest. Restoring a " +
    "superseded memory makes it active again."));
  for (const members of chains.values()) {
    const ordered = [...members].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
    body.append(h("div", {class: "chain"}, h("ol", {class: "timeline"}, ordered.map((m) => {
      const current = m.status === "active";
      return h("li", {class: current ? "current" : null},
        h("p", {class: "text"}, m.text),
        h("p", {class: "muted"}, `${current ? "in use" : m.status}${m.superseded_by_claim_id ? " (by a claim)" : ""}` +
          ` · ${m.kind} · created ${when(m.created_at)}`),
        !current && mayRestore ? h("button", {type: "button", class: "secondary",
          "aria-label": `Restore: ${m.text.slice(0, 60)}`, onclick: async () => {
            const result = await call("POST", `/memories/${encodeURIComponent(m.id)}/restore`);
            say(result.restored ? "Memory restored." : result.message);
            render();
          }}, "Restore") : null);
    }))));
  }
  body.append(links);
}

async function profileSection(subject, body) {
  if (!can("profiles:read")) return refused(body, "profiles:read");
  const answer = await get("/profiles", {subject_id: subject, format: "full"});
  const rows = Object.entries(answer.data || {}).map(([name, value]) => ({name, ...value}));
  body.append(table("Profile fields", [
    {label: "Field", value: (r) => r.name},
    {label: "Value", value: (r) => asText(r.value), wrap: true},
    {label: "Confidence", value: (r) => r.confidence ?? "", num: true},
    {label: "Source", value: (r) => r.source_type || ""},
    {label: "Updated", value: (r) => when(r.updated_at)},
  ], rows, "No profile fields."));
}

async function claimsSection(subject, body) {
  if (!can("memories:read")) return refused(body, "memories:read");
  const answer = await get(`/claims/subject/${encodeURIComponent(subject)}/truth`);
  body.append(table("What is true now, one claim per slot", [
    {label: "Slot", value: (c) => c.slot},
    {label: "Value", value: (c) => asText(c.object_value), wrap: true},
    {label: "Confidence", value: (c) => c.confidence, num: true},
    {label: "Updated", value: (c) => when(c.updated_at)},
  ], answer.slots || [], "No claims."));
}

// A state key as a path: each segment encoded, its slashes kept (the route takes the rest of the path).
function statePath(stateKey) {
  return "/state/" + stateKey.split("/").map(encodeURIComponent).join("/");
}

async function stateSection(subject, body) {
  if (!can("state:read")) return refused(body, "state:read");
  // The listing has no values (they can be big): a key's value is read when it is opened.
  const limit = 100;
  const answer = await get("/state", {limit}, {"x-subject-id": subject});
  const out = h("div", {"aria-live": "polite"});
  const open = async (item) => {
    out.replaceChildren();
    try {
      const read = await get(statePath(item.key), null, {"x-subject-id": subject});
      out.append(h("h2", {}, "State ", h("span", {class: "text"}, item.key)), h("pre", {}, asText(read.value)));
    } catch (error) {
      out.append(errorBox(error));
    }
  };
  body.append(table(answer.count >= limit ? `The first ${limit} state keys, by key` : "State keys, by key", [
    {label: "Key", value: (s) => h("button", {type: "button", class: "secondary", "aria-label": `Show state ${s.key}`,
      onclick: () => open(s)}, s.key)},
    {label: "Expires", value: (s) => (s.ttl ? when(s.ttl) : "never")},
    {label: "Updated", value: (s) => when(s.updated_at)},
  ], answer.data, "No state for this subject."));
  body.append(out);
}

async function recordsSection(subject, body) {
  if (!can("records:read")) return refused(body, "records:read");
  const {schemas} = await get("/records/schemas");
  if (!schemas.length) {
    body.append(h("p", {class: "muted"}, "The project defines no record types."));
    return;
  }
  for (const schema of schemas) {
    const answer = await get(`/records/${encodeURIComponent(schema.type_name)}`, {owner_id: subject, limit: 50});
    body.append(h("h2", {}, schema.display_name || schema.type_name),
      table(`${schema.type_name} records owned by this subject`, [
        {label: "Record", value: (r) => r.record_id || r.id},
        {label: "Data", value: (r) => asText(r.data), wrap: true},
        {label: "Updated", value: (r) => when(r.updated_at)},
      ], answer.records || [], "None."));
  }
}

async function chatsSection(subject, body) {
  if (!can("history:read")) return refused(body, "history:read");
  const {chats} = await get("/chat/history/list", {subject_id: subject, limit: 100});
  body.append(table("Chats, most recent first", [
    {label: "Chat", value: (c) => h("a", {href: link(["chat", subject, c.chat_id])}, c.chat_id)},
    {label: "Messages", value: (c) => c.message_count, num: true},
    {label: "Started", value: (c) => when(c.created_at)},
    {label: "Last message", value: (c) => when(c.last_time)},
  ], chats, "No chats."));
}

async function exportSubject(subject) {
  const sure = await confirmAction({title: "Export this subject?", ok: "Export",
    text: `Everything stored about ${subject} will be downloaded as a JSONL file to this computer.`});
  if (!sure) return;
  try {
    const response = await call("GET", `/subjects/${encodeURIComponent(subject)}/export`,
      {headers: {Accept: "application/x-ndjson"}, raw: true});
    const url = URL.createObjectURL(await response.blob());
    const anchor = h("a", {href: url, download: `subject-${subject.replace(/[^\w.-]+/g, "_")}.jsonl`});
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say("Export downloaded.");
  } catch (error) {
    say(error.message, true);
  }
}

async function eraseSubject(subject) {
  const sure = await confirmAction({title: "Erase this subject for good?", typed: subject, ok: "Erase",
    text: "Memories, claims, profile, chats, state and recall events of this subject are removed. " +
      "This cannot be undone."});
  if (!sure) return;
  try {
    const answer = await call("DELETE", `/subjects/${encodeURIComponent(subject)}`);
    const counts = Object.entries(answer.erased || {}).map(([kind, n]) => `${kind}: ${n}`).join(", ");
    say(`Subject erased (${counts || "nothing was stored"}).`);
    location.hash = "#/subjects";
  } catch (error) {
    say(error.message, true);
  }
}

// -- one chat -----------------------------------------------------------------------------

async function chatView(route, page) {
  const [, subject, chat] = route.parts;
  page.append(h("p", {}, h("a", {href: link(["subject", subject, "chats"])}, "← Chats of ", subject)));
  page.append(h("h1", {}, "Chat ", h("span", {class: "text"}, chat)));
  const read = await get("/chat/history/read", {chat_id: chat, subject_id: subject, limit: 1000});
  page.append(h("h2", {}, "Messages"));
  page.append(table("Messages, oldest first", [
    {label: "Role", value: (m) => m.role},
    {label: "Content", value: (m) => asText(m.content), wrap: true},
    {label: "At", value: (m) => when(m.event_time || m.created_at)},
  ], read.messages || []));
  if (can("memories:read")) {
    const recalls = await get("/memories/recalls", {chat_id: chat, limit: 200});
    page.append(h("h2", {}, "Memories recalled into this chat"));
    page.append(table("Recall events", [
      {label: "Memory", value: (r) => r.memory_text || r.text || r.memory_id, wrap: true},
      {label: "Score", value: (r) => r.similarity_score ?? r.score ?? "", num: true},
      {label: "At", value: (r) => when(r.recalled_at || r.created_at)},
    ], recalls.data || [], "No memory was recalled into this chat."));
  }
  if (can("audit:read")) {
    const audit = await get("/audit/requests", {chat_id: chat, limit: 100});
    page.append(h("h2", {}, "Context injected into each turn (audit log)"));
    if (!audit.enabled) {
      page.append(h("p", {class: "muted"}, "The audit log is off (audit.enabled): turns are not recorded."));
    } else {
      page.append(audit.data.length ? h("ul", {class: "events"}, audit.data.map((record) => h("li", {},
        h("details", {}, h("summary", {}, `${when(record.created_at)} · ${record.direction} · ${record.request_type}`),
          h("pre", {}, asText(record.payload)))))) : h("p", {class: "muted"}, "No audit record of this chat."));
    }
  }
}

// -- memory search ------------------------------------------------------------------------

function part(hit, name) {
  const parts = hit.effective_score_parts;
  return parts && typeof parts[name] === "number" ? parts[name].toFixed(3) : "";
}

async function searchView(route, page) {
  page.append(h("h1", {}, "Memory search"));
  page.append(h("p", {class: "muted"}, "The search recall runs before a chat turn: hits at least as relevant as the " +
    "minimum score, ranked by effective score: its relevance (its match next to the best hit's) times the " +
    "memory's weight (from its importance, confidence, reinforcement by recalls and freshness)."));
  const subject = h("input", {type: "text", autocomplete: "off", value: route.params.get("subject_id") || ""});
  const q = h("input", {type: "search", autocomplete: "off", value: route.params.get("q") || ""});
  const minScore = h("input", {type: "number", min: "0", max: "1", step: "0.05",
    value: route.params.get("min_score") || "0.3"});
  page.append(h("form", {class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    navigate(link(["search"], {subject_id: subject.value.trim(), q: q.value.trim(), min_score: minScore.value}));
  }}, field("Subject id", subject), field("Query", q), field("Minimum score", minScore),
  h("button", {type: "submit"}, "Search")));
  if (!can("memories:search")) return refused(page, "memories:search");
  if (!subject.value.trim() || !q.value.trim()) return;
  const answer = await get("/memories/search",
    {subject_id: subject.value.trim(), q: q.value.trim(), min_score: minScore.value, limit: 50, explain: "true"});
  page.append(h("p", {class: "muted"}, `${answer.count} hits · engine ${answer.engine}`));
  page.append(table("Hits, as recall ranks them", [
    {label: "Memory", value: (m) => m.text, wrap: true},
    {label: "Score", value: (m) => m.score, num: true},
    {label: "Effective score", value: (m) => m.effective_score, num: true},
    {label: "= relevance", value: (m) => part(m, "relevance"), num: true},
    {label: "× weight", value: (m) => part(m, "weight"), num: true},
    {label: "Weight from", value: (m) => m.effective_score_parts ? ["importance", "confidence", "reinforcement",
      "freshness"].map((name) => `${name} ${part(m, name)}`).join(" · ") : ""},
    {label: "Kind", value: (m) => m.kind},
    {label: "Importance", value: (m) => m.importance, num: true},
    {label: "Temporal", value: (m) => (m.is_temporal ? "yes" : "no")},
    {label: "Created", value: (m) => when(m.created_at)},
  ], answer.data, "No memory scores that high."));
}

// -- prompts and memory policies ----------------------------------------------------------

const PROMPTS = {title: "System prompts", path: "/prompts", listKey: "prompts", textField: "prompt_text",
  scope: "prompts", noun: "prompt", route: "prompts"};
const POLICIES = {title: "Memory policies", path: "/memory/policies", listKey: "policies", textField: "policy_text",
  scope: "memory_policies", noun: "policy", route: "policies"};

async function scopedTextView(route, page, kind) {
  page.append(h("h1", {}, kind.title));
  if (!can(`${kind.scope}:read`)) return refused(page, `${kind.scope}:read`);
  const mayWrite = can(`${kind.scope}:write`, "PATCH");
  const list = (await get(kind.path))[kind.listKey];

  // Resolve preview: what a request of this subject and chat would get.
  const subject = h("input", {type: "text", autocomplete: "off", value: route.params.get("subject_id") || ""});
  const chat = h("input", {type: "text", autocomplete: "off", value: route.params.get("chat_id") || ""});
  const preview = h("div", {id: "resolve-preview", "aria-live": "polite"});
  const showPreview = async () => {
    const answer = await get(`${kind.path}/resolve`,
      {subject_id: subject.value.trim(), chat_id: chat.value.trim(), combined: "true"});
    const ids = answer.policy_ids || answer.prompt_ids || [];
    preview.replaceChildren();
    append(preview, [
      h("p", {class: "muted"}, ids.length ? `From ${ids.join(", ")}` : `No ${kind.noun} applies.`),
      h("pre", {"data-testid": "resolved-text"}, answer[kind.textField] || ""),
      answer.config && Object.keys(answer.config).length ? h("pre", {}, asText(answer.config)) : null]);
  };
  page.append(h("section", {"aria-labelledby": "preview-title"},
    h("h2", {id: "preview-title"}, "Resolve preview"),
    h("form", {class: "inline", onsubmit: async (event) => {
      event.preventDefault();
      // Kept in the address (without a new history entry): the page shows the same preview after an edit.
      history.replaceState(null, "", link([kind.route], {subject_id: subject.value.trim(), chat_id: chat.value.trim()}));
      try { await showPreview(); } catch (error) { preview.replaceChildren(errorBox(error)); }
    }}, field("Subject id (optional)", subject), field("Chat id (optional)", chat),
    h("button", {type: "submit", class: "secondary"}, "Preview")), preview));

  page.append(h("h2", {}, `All ${kind.title.toLowerCase()}`));
  page.append(table(kind.title, [
    {label: "Name", value: (p) => p.name},
    {label: "Scope", value: (p) => p.scope + (p.scope_id ? `: ${p.scope_id}` : "")},
    {label: "Default", value: (p) => (p.is_default ? "yes" : "no")},
    {label: "Active", value: (p) => (p.is_active === false || p.is_active === 0 ? "no" : "yes")},
    {label: "Priority", value: (p) => p.priority, num: true},
    {label: "Text", value: (p) => p[kind.textField], wrap: true},
    {label: "Actions", value: (p) => mayWrite ? h("button", {type: "button", class: "secondary",
      "aria-label": `Edit ${kind.noun} ${p.name}`, onclick: () => editForm(kind, p, editSlot)}, "Edit") : ""},
  ], list, `No ${kind.noun} yet.`));
  const editSlot = h("div", {});
  page.append(editSlot);
  if (mayWrite) page.append(createForm(kind));
  await showPreview();
}

function scopeInputs(current) {
  const scope = h("select", {}, ["project", "subject", "chat"].map((s) =>
    h("option", {value: s, selected: current && current.scope === s}, s)));
  const scopeId = h("input", {type: "text", autocomplete: "off", value: (current && current.scope_id) || ""});
  const isDefault = h("input", {type: "checkbox", checked: Boolean(current ? current.is_default : true)});
  isDefault.id = `f${++fieldCount}-default`;
  // What the request body says of the scope (PATCH and POST alike).
  const body = () => ({scope: scope.value, scope_id: scopeId.value.trim() || undefined, is_default: isDefault.checked});
  return {body, fields: [field("Scope", scope), field("Scope id (subject or chat)", scopeId),
    h("div", {class: "field check"}, isDefault,
      h("label", {for: isDefault.id}, "Default at its level (applies without being named)"))]};
}

function editForm(kind, item, slot) {
  const text = h("textarea", {}, item[kind.textField]);
  const scoped = scopeInputs(item);
  const error = h("p", {class: "error", role: "alert"});
  const form = h("form", {id: "edit-form", "aria-labelledby": "edit-title", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await call("PATCH", `${kind.path}/${encodeURIComponent(item.id)}`,
        {body: {[kind.textField]: text.value, ...scoped.body()}});
      say(`Saved ${kind.noun} ${item.name}.`);
      form.remove();
      await render();
    } catch (failure) {
      error.textContent = failure.message;
    }
  }}, h("h2", {id: "edit-title"}, `Edit ${kind.noun} ${item.name}`), field("Text", text), scoped.fields, error,
  h("div", {class: "actions"}, h("button", {type: "submit"}, "Save"),
    h("button", {type: "button", class: "secondary", onclick: () => form.remove()}, "Cancel")));
  slot.replaceChildren(form);
  text.focus();
}

function createForm(kind) {
  const name = h("input", {type: "text", autocomplete: "off"});
  const text = h("textarea", {});
  const scoped = scopeInputs(null);
  const error = h("p", {class: "error", role: "alert"});
  return h("form", {"aria-labelledby": "create-title", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await call("POST", kind.path, {body: {name: name.value.trim(), [kind.textField]: text.value, ...scoped.body()}});
      say(`Created ${kind.noun} ${name.value.trim()}.`);
      await render();
    } catch (failure) {
      error.textContent = failure.message;
    }
  }}, h("h2", {id: "create-title"}, `New ${kind.noun}`), field("Name", name), field("Text", text), scoped.fields,
  error, h("div", {class: "actions"}, h("button", {type: "submit"}, `Create ${kind.noun}`)));
}

// -- jobs ---------------------------------------------------------------------------------

// The most unfinished jobs a page lists (GET /jobs?limit).
const JOB_LIMIT = 1000;

async function jobsView(route, page) {
  page.append(h("h1", {}, "Jobs"));
  if (!can("jobs:read")) return refused(page, "jobs:read");
  const answer = await get("/jobs", {limit: JOB_LIMIT});
  const failing = answer.data.filter((j) => j.last_error);
  const mayRetry = can("jobs:write", "POST");
  page.append(h("dl", {class: "facts"},
    h("dt", {}, "Unfinished jobs (queue depth)"), h("dd", {}, answer.count >= JOB_LIMIT ? `${JOB_LIMIT} or more` : answer.count),
    h("dt", {}, "Failing (will be retried)"), h("dd", {}, failing.length)));
  page.append(h("p", {class: "muted"}, "Failed jobs are retried on their own, later each time (learning.retry_*)" +
    (mayRetry ? "; Retry now runs a waiting one at once (a job running now cannot be)." : ".")));
  const columns = [
    {label: "Job", value: (j) => j.id},
    {label: "Kind", value: (j) => j.kind},
    {label: "Status", value: (j) => j.status},
    {label: "Attempts", value: (j) => j.attempts, num: true},
    {label: "Last error", value: (j) => j.last_error || "", wrap: true},
    {label: "Due", value: (j) => when(j.due_at)},
    {label: "Subject", value: (j) => j.subject_id ? h("a", {href: link(["subject", j.subject_id, "memories"])},
      j.subject_id) : ""},
  ];
  if (mayRetry) {
    columns.push({label: "Actions", value: (j) => h("button", {type: "button", class: "secondary",
      "aria-label": `Retry job ${j.id} now`, onclick: () => retryJob(j)}, "Retry now")});
  }
  page.append(table("Unfinished jobs", columns, answer.data, "No job is waiting."));
}

// Make the job due now, then show its next state: the worker takes it within moments, and the
// list as it was before that run would still show the old attempt.
async function retryJob(job) {
  try {
    await call("POST", `/jobs/${encodeURIComponent(job.id)}/retry`);
  } catch (error) {
    say(error.message, true);
    return;
  }
  say(`Job ${job.id} is due now.`);
  try {
    for (let tries = 0; tries < 20; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      if (currentRoute().parts[0] !== "jobs") return; // the user went elsewhere meanwhile
      const now = (await get("/jobs", {limit: JOB_LIMIT})).data.find((j) => j.id === job.id);
      if (!now) {
        say(`Job ${job.id} ran and is done.`);
        break;
      }
      // A worker claimed it again (attempts count claims): the table shows how that run went.
      if (now.attempts !== job.attempts) {
        say(`Job ${job.id} ran again (attempt ${now.attempts}).`);
        break;
      }
    }
  } catch (error) {
    say(error.message, true);
  }
  render();
}

// -- live events --------------------------------------------------------------------------

// The stream is read with fetch(), not EventSource: EventSource cannot send the key header.
async function eventsView(route, page) {
  page.append(h("h1", {}, "Live events"));
  if (!can("memories:read") && !can("events:read")) return refused(page, "events:read");
  const subject = h("input", {type: "text", autocomplete: "off", value: route.params.get("subject_id") || ""});
  const list = h("ul", {class: "events", "aria-live": "polite", "aria-label": "Events, newest first"});
  const state = h("p", {class: "muted"}, "Not connected.");
  const toggle = h("button", {type: "submit"}, "Connect");
  let controller = null;
  const stop = () => {
    if (controller) controller.abort();
    controller = null;
    toggle.textContent = "Connect";
    state.textContent = "Not connected.";
  };
  leaving.push(stop);
  const show = (type, data) => {
    list.prepend(h("li", {}, h("span", {class: "badge"}, type), " ", when(data.timestamp) || "", " ",
      JSON.stringify(data).slice(0, 400)));
    while (list.children.length > 200) list.lastChild.remove();
  };
  const start = async () => {
    controller = new AbortController();
    toggle.textContent = "Disconnect";
    state.textContent = "Connecting…";
    try {
      const response = await call("GET", "/events/memories", {query: {subject_id: subject.value.trim()},
        headers: {Accept: "text/event-stream"}, raw: true, signal: controller.signal});
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const type = (frame.match(/^event: (.*)$/m) || [])[1] || "message";
          const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          let parsed = {};
          try { parsed = JSON.parse(data || "{}"); } catch { parsed = {raw: data}; }
          if (type === "connected") state.textContent = "Connected.";
          else if (type !== "heartbeat") show(type, parsed);
        }
      }
      stop();
    } catch (error) {
      if (error.name === "AbortError") return;
      stop();
      state.textContent = error.message;
    }
  };
  page.append(h("form", {class: "inline", onsubmit: (event) => {
    event.preventDefault();
    if (controller) stop(); else start();
  }}, field("Only this subject (optional)", subject), toggle), state, list);
}

// -- start --------------------------------------------------------------------------------

(async function start() {
  if (key()) {
    try {
      await signIn(key());
      if (!location.hash) location.hash = "#/subjects";
      else await render();
      return;
    } catch (error) {
      signOut(error.status === 401 ? "Your key is no longer valid." : error.message);
      return;
    }
  }
  signOut("");
})();
