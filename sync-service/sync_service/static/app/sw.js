// The field app's service worker: keeps the app shell (and the last config) in a cache, so the
// app opens and works after a reload with no network. Shell files are served from the cache and
// refreshed in the background; config.json is fetched first and the cached copy used offline.
// Data never goes through here: records live in IndexedDB and sync over the websocket.
const CACHE = "offsync-app-v1";
const SHELL = ["./", "index.html", "app.js", "app.css", "config.json", "manifest.webmanifest", "icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function refresh(request) {
  const response = await fetch(request);
  if (response.ok) {
    const cache = await caches.open(CACHE);
    await cache.put(request, response.clone());
  }
  return response;
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  const scope = new URL(self.registration.scope);
  if (!url.pathname.startsWith(scope.pathname)) return;
  if (url.pathname.endsWith("/config.json")) {
    event.respondWith(refresh(event.request).catch(() => caches.match(event.request)));
    return;
  }
  event.respondWith(
    caches.match(event.request, { ignoreSearch: true }).then((hit) => {
      const fresh = refresh(event.request);
      if (hit) {
        fresh.catch(() => undefined);
        return hit;
      }
      return fresh.catch(() => caches.match("index.html"));
    }),
  );
});
