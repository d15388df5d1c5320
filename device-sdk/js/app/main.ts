/**
 * The Offsync field app: sign in, see the entities of your profile and their records (with
 * search), create/edit/delete through forms generated from the entity metadata, a status bar and
 * a conflicts view. Everything reads and writes the local database; the SDK syncs it.
 */
import { AuthError, AuthSession, IndexedDBStore, Offsync, type Row, ValidationError } from "../src/index.js";
import type { AttributeMeta, EntityMeta } from "../src/protocol.js";

interface Config {
  auth_url: string;
  sync_path: string;
}

const MAX_LISTED = 200;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

let db: Offsync | null = null;
let session: AuthSession | null = null;
let current: string | null = null; // the entity shown
let editing: string | null = null; // the record id in the form (null: a new record)
let showingConflicts = false;
let unwatch: (() => void) | null = null;

async function config(): Promise<Config> {
  try {
    const res = await fetch("config.json", { cache: "no-store" });
    if (res.ok) {
      const c = (await res.json()) as Config;
      localStorage.setItem("offsync.config", JSON.stringify(c));
      return c;
    }
  } catch {
    // offline: the copy kept from the last time
  }
  const kept = localStorage.getItem("offsync.config");
  if (kept) return JSON.parse(kept) as Config;
  return { auth_url: location.origin, sync_path: "/v1/sync" };
}

function deviceId(): string {
  let id = localStorage.getItem("offsync.device_id");
  if (!id) {
    id = crypto.randomUUID();
    localStorage.setItem("offsync.device_id", id);
  }
  return id;
}

function show(section: "login" | "workspace"): void {
  $("login").hidden = section !== "login";
  $("workspace").hidden = section !== "workspace";
  $("status").hidden = section !== "workspace";
  $("sign-out").hidden = section !== "workspace";
}

// ------------------------------------------------------------------------- status bar ----
function renderStatus(): void {
  if (!db) return;
  const s = db.status;
  if (s.signedOut) {
    // The server ended this sign-in (signed out elsewhere, device revoked, password changed):
    // the SDK forgot it, so the reload shows the sign-in form.
    location.reload();
    return;
  }
  const online = s.online && navigator.onLine;
  $("status").dataset.online = String(online);
  $("status-online").textContent = online ? "online" : s.connecting && navigator.onLine ? "connecting…" : "offline";
  $("status-progress").textContent = s.downloading ? `downloading ${s.downloading.done}/${s.downloading.total}` : s.uploading ? "uploading…" : "";
  $("status-pending").textContent = `${s.pending} pending`;
  $("status-pending").dataset.count = String(s.pending);
  $("status-last").textContent = s.lastSynced ? `last sync ${new Date(s.lastSynced).toLocaleTimeString()}` : "never synced";
  $("status-error").textContent = s.error && navigator.onLine ? s.error : "";
  const btn = document.querySelector<HTMLButtonElement>("#entities button[data-view='conflicts']");
  if (btn) btn.textContent = `Conflicts (${s.conflicts})`;
  if (showingConflicts) renderConflicts();
}

// --------------------------------------------------------------------------- entities ----
function label(e: EntityMeta | undefined, name: string): string {
  return e?.display_name ?? name;
}

function renderEntities(): void {
  if (!db) return;
  const nav = $("entities");
  const names = db.entities().map((e) => e.name);
  for (const n of db.replica.entities()) if (!names.includes(n)) names.push(n);
  nav.replaceChildren();
  for (const name of names) {
    const b = document.createElement("button");
    b.textContent = label(db.entity(name), name);
    b.dataset.entity = name;
    b.setAttribute("aria-current", String(name === current && !showingConflicts));
    b.onclick = () => openEntity(name);
    nav.append(b);
  }
  const c = document.createElement("button");
  c.dataset.view = "conflicts";
  c.textContent = `Conflicts (${db.conflicts().length})`;
  c.setAttribute("aria-current", String(showingConflicts));
  c.onclick = () => openConflicts();
  nav.append(c);
  if (!current && names.length && !showingConflicts) openEntity(names[0]);
}

function title(row: Row, meta: EntityMeta | undefined): string {
  const key = meta?.primary_attribute;
  const v = key ? row.attributes[key] : undefined;
  if (v !== undefined && v !== null && v !== "") return String(v);
  const first = Object.values(row.attributes).find((x) => typeof x === "string" && x);
  return first ? String(first) : row.id;
}

function openEntity(name: string): void {
  current = name;
  showingConflicts = false;
  closeEditor();
  $("conflicts-view").hidden = true;
  $("list-view").hidden = false;
  renderEntities();
  watchList();
}

function watchList(): void {
  unwatch?.();
  if (!db || !current) return;
  const entity = current;
  const meta = db.entity(entity);
  unwatch = db.watch(entity, { search: $<HTMLInputElement>("search").value, orderBy: meta?.primary_attribute }, (rows) => {
    const ul = $("records");
    // A list of 100,000 elements helps nobody: the first ones, and search narrows it down.
    ul.replaceChildren(
      ...rows.slice(0, MAX_LISTED).map((row) => {
        const li = document.createElement("li");
        li.className = "record";
        li.dataset.id = row.id;
        li.textContent = title(row, meta);
        if (row.pending) {
          const badge = document.createElement("span");
          badge.className = "badge";
          badge.textContent = "pending";
          li.append(badge);
        }
        li.onclick = () => openEditor(row.id);
        return li;
      }),
    );
    ul.dataset.count = String(rows.length);
  });
}

// ----------------------------------------------------------------------------- editor ----
function inputFor(name: string, spec: AttributeMeta, value: unknown): HTMLElement {
  let el: HTMLInputElement | HTMLSelectElement;
  const options = spec.options;
  if (spec.type === "bool") {
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = value === true;
    el = cb;
  } else if ((spec.type === "choice" && options?.length) || (spec.type === "lookup" && spec.target && db?.entity(spec.target))) {
    const sel = document.createElement("select");
    sel.append(new Option("", ""));
    if (spec.type === "choice") {
      for (const o of options ?? []) sel.append(new Option(String(o), String(o), false, o === value));
    } else {
      const target = db!.entity(spec.target!);
      for (const r of db!.query(spec.target!)) sel.append(new Option(title(r, target), r.id, false, r.id === value));
    }
    if (value !== undefined && value !== null && ![...sel.options].some((o) => o.value === String(value))) {
      sel.append(new Option(String(value), String(value), false, true));
    }
    el = sel;
  } else {
    const inp = document.createElement("input");
    if (spec.type === "int") {
      inp.type = "number";
      inp.step = "1";
    } else if (spec.type === "decimal") {
      inp.type = "number";
      inp.step = "any";
    } else if (spec.type === "datetime") {
      inp.type = "text";
      inp.placeholder = "YYYY-MM-DDTHH:MM";
    } else {
      inp.type = "text";
      if (spec.max_length) inp.maxLength = spec.max_length;
    }
    inp.value = value === undefined || value === null ? "" : String(value);
    el = inp;
  }
  el.name = name;
  el.dataset.type = spec.type;
  const wrap = document.createElement("label");
  const cap = document.createElement("span");
  cap.textContent = `${spec.display_name ?? name}${spec.required ? " *" : ""}`;
  wrap.append(cap, el);
  return wrap;
}

/** The form's value for one attribute, typed as the metadata says (null when empty). */
function readInput(el: HTMLInputElement | HTMLSelectElement, spec: AttributeMeta): unknown {
  if (spec.type === "bool") return (el as HTMLInputElement).checked;
  const raw = el.value.trim();
  if (raw === "") return null;
  if (spec.type === "int") return Number.isInteger(Number(raw)) ? Number(raw) : raw;
  if (spec.type === "decimal") return Number.isFinite(Number(raw)) ? Number(raw) : raw;
  if (spec.type === "choice") {
    const option = spec.options?.find((o) => String(o) === raw);
    if (option !== undefined) return option;
    return /^-?\d+$/.test(raw) ? Number(raw) : raw; // choice values are integers
  }
  return raw;
}

function entitySpec(entity: string): Record<string, AttributeMeta> {
  const meta = db?.entity(entity);
  if (meta) return meta.attributes;
  // No metadata (older server): edit the attributes the records have, as strings.
  const names = new Set<string>();
  for (const r of db?.query(entity, { limit: 50 }) ?? []) for (const k of Object.keys(r.attributes)) names.add(k);
  return Object.fromEntries([...names].map((n) => [n, { type: "string" }]));
}

function openEditor(id: string | null): void {
  if (!db || !current) return;
  editing = id;
  const row = id ? db.get(current, id) : null;
  const specs = entitySpec(current);
  $("editor-title").textContent = `${id ? "Edit" : "New"} ${label(db.entity(current), current)}`;
  $("fields").replaceChildren(...Object.entries(specs).map(([n, spec]) => inputFor(n, spec, row?.attributes[n])));
  $("form-error").textContent = "";
  $("delete").hidden = id === null;
  $("list-view").hidden = true;
  $("editor").hidden = false;
}

function closeEditor(): void {
  editing = null;
  $("editor").hidden = true;
  $("list-view").hidden = false;
}

async function save(ev: Event): Promise<void> {
  ev.preventDefault();
  if (!db || !current) return;
  const specs = entitySpec(current);
  const before = editing ? db.get(current, editing)?.attributes ?? {} : {};
  const fields: Record<string, unknown> = {};
  for (const el of $("fields").querySelectorAll<HTMLInputElement | HTMLSelectElement>("input, select")) {
    const spec = specs[el.name];
    const v = readInput(el, spec);
    if (editing) {
      if (v !== (before[el.name] ?? null)) fields[el.name] = v;
    } else if (v !== null && !(spec.type === "bool" && v === false)) {
      fields[el.name] = v;
    }
  }
  try {
    if (editing) {
      if (Object.keys(fields).length) await db.update(current, editing, fields);
    } else {
      await db.create(current, fields);
    }
    closeEditor();
  } catch (e) {
    $("form-error").textContent = e instanceof ValidationError ? e.message : String((e as Error).message ?? e);
  }
}

async function remove(): Promise<void> {
  if (!db || !current || !editing) return;
  try {
    await db.delete(current, editing);
    closeEditor();
  } catch (e) {
    $("form-error").textContent = String((e as Error).message ?? e);
  }
}

// -------------------------------------------------------------------------- conflicts ----
/** What each conflict outcome (docs/conflicts.md) means to the person who made the change. */
const CONFLICT_OUTCOMES: Record<string, string> = {
  client_wins: "conflict: your change won (client wins)",
  server_wins: "conflict: the server's version was kept (server wins)",
  merged: "conflict: merged field by field",
};
function openConflicts(): void {
  showingConflicts = true;
  closeEditor();
  $("list-view").hidden = true;
  $("conflicts-view").hidden = false;
  renderEntities();
  renderConflicts();
}

function renderConflicts(): void {
  if (!db) return;
  const body = $("conflicts").querySelector("tbody")!;
  body.replaceChildren(
    ...[...db.conflicts()].reverse().map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.id = c.id;
      tr.dataset.status = c.status;
      tr.dataset.code = c.code ?? "";
      const server = c.server
        ? c.server.deleted
          ? "deleted"
          : `v${c.server.version}: ${JSON.stringify(c.server.attributes ?? {})}`
        : "";
      const outcome = c.status === "conflict" ? CONFLICT_OUTCOMES[c.code ?? ""] ?? `conflict (${c.code})` : `rejected (${c.code}): ${c.message ?? ""}`;
      for (const text of [`${c.entity} ${c.id}`, outcome, `${c.local.op} ${JSON.stringify(c.local.fields)}`, server]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    }),
  );
}

// ---------------------------------------------------------------------------- startup ----
async function start(cfg: Config, s: AuthSession): Promise<void> {
  session = s;
  $("who").textContent = s.data.username;
  const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${cfg.sync_path}`;
  db = await Offsync.open({
    url: wsUrl,
    store: new IndexedDBStore(`offsync-${s.userId}`),
    auth: s,
    deviceId: s.data.deviceId,
  });
  (window as unknown as { offsync: Offsync }).offsync = db;
  show("workspace");
  db.onStatus(() => renderStatus());
  let known = "";
  db.replica.subscribe(() => {
    const names = JSON.stringify(db!.entities().map((e) => e.name));
    if (names !== known) {
      known = names;
      renderEntities();
    }
  });
  renderEntities();
  if (navigator.onLine) db.start();
  // The SDK would retry with backoff anyway; following the browser's own view is quicker both ways.
  window.addEventListener("offline", () => db?.stop());
  window.addEventListener("online", () => db?.start());
  document.body.dataset.ready = "true";
}

async function main(): Promise<void> {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch(() => undefined);
  }
  const cfg = await config();
  $("search").addEventListener("input", () => watchList());
  $("new-record").addEventListener("click", () => openEditor(null));
  $("editor").addEventListener("submit", (ev) => void save(ev));
  $("delete").addEventListener("click", () => void remove());
  $("cancel").addEventListener("click", () => closeEditor());
  $("sign-out").addEventListener("click", async () => {
    db?.close();
    await db?.replica.store.destroy();
    await session?.logout();
    location.reload();
  });
  const kept = AuthSession.restore(localStorage);
  if (kept) {
    await start(cfg, kept);
    return;
  }
  show("login");
  document.body.dataset.ready = "true";
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const s = await AuthSession.login(
        cfg.auth_url,
        $<HTMLInputElement>("username").value,
        $<HTMLInputElement>("password").value,
        deviceId(),
        localStorage,
      );
      await start(cfg, s);
    } catch (e) {
      $("login-error").textContent =
        e instanceof AuthError ? (e.status === 401 ? "Wrong user name or password." : e.message) : `Cannot sign in: ${(e as Error).message}`;
    }
  });
}

void main();
