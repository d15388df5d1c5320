// Offsync console: small progressive enhancements (the pages work without it).
(function () {
  "use strict";
  // Forms that destroy something ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });
  // Live figures: poll, and turn counters into per-second rates.
  var live = document.getElementById("live");
  if (live) {
    var last = null;
    var tick = function () {
      fetch(live.getAttribute("data-src"), { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (f) {
          live.querySelectorAll("[data-k]").forEach(function (el) {
            var v = f[el.getAttribute("data-k")];
            el.textContent = v === null || v === undefined ? "–" : v;
          });
          if (last) {
            var dt = Math.max(0.001, f.at - last.at);
            live.querySelectorAll("[data-rate]").forEach(function (el) {
              var k = el.getAttribute("data-rate");
              el.textContent = f[k] === undefined ? "–" : Math.max(0, (f[k] - last[k]) / dt).toFixed(1);
            });
            live.querySelectorAll("[data-ratio]").forEach(function (el) {
              var a = el.getAttribute("data-ratio"), b = el.getAttribute("data-per");
              var n = (f[b] || 0) - (last[b] || 0);
              el.textContent = n > 0 ? (1000 * ((f[a] || 0) - (last[a] || 0)) / n).toFixed(0) + " ms" : "–";
            });
          }
          last = f;
        })
        .catch(function () {});
    };
    tick();
    setInterval(tick, 2000);
  }
})();
