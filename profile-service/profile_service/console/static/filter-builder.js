// Custom download filter builder: and/or groups nested up to the server's limit, operators
// offered by attribute type, value editors by type. It only edits the JSON condition that the
// admin API validates; the server decides what is valid.
(function () {
  "use strict";
  var root = document.getElementById("builder");
  if (!root) return;
  var spec = JSON.parse(root.getAttribute("data-spec"));
  var pickers = JSON.parse(root.getAttribute("data-pickers"));
  var out = document.getElementById("condition");
  var attrs = Object.keys(spec.attributes);
  var model;
  try { model = out.value ? JSON.parse(out.value) : null; } catch (e) { model = null; }
  if (!model || !(model.and || model.or)) model = { and: model ? [model] : [] };

  function el(tag, props, kids) {
    var e = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "text") e.textContent = props[k];
      else if (k === "cls") e.className = props[k];
      else e.setAttribute(k, props[k]);
    });
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function opsFor(attr) {
    var a = spec.attributes[attr] || {};
    return Object.keys(spec.operators).filter(function (op) {
      var o = spec.operators[op];
      if (o.types.indexOf(a.type) < 0) return false;
      return !(a.type === "lookup" && o.targets.length && o.targets.indexOf(a.target) < 0);
    });
  }
  function select(options, value, label, cls) {
    var s = el("select", { "aria-label": label, cls: cls });
    options.forEach(function (o) {
      var opt = el("option", { value: o[0], text: o[1] });
      if (String(o[0]) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    return s;
  }
  function parseTyped(type, raw) {
    if (type === "int" || type === "choice") return /^-?\d+$/.test(raw.trim()) ? parseInt(raw, 10) : raw;
    if (type === "decimal") return raw.trim() !== "" && !isNaN(Number(raw)) ? Number(raw) : raw;
    if (type === "bool") return raw === "true";
    if (type === "datetime") return raw && raw.length === 16 ? raw + ":00+00:00" : raw;
    return raw;
  }
  function valueEditor(cond, label) {
    var a = spec.attributes[cond.attribute] || {};
    var kind = (spec.operators[cond.operator] || {}).value;
    if (kind === "none") { delete cond.value; return null; }
    var input;
    if (kind === "list") {
      input = el("input", { "aria-label": label + " (comma-separated)", cls: "fb-val", placeholder: "a, b, c" });
      input.value = Array.isArray(cond.value) ? cond.value.join(", ") : "";
      input.addEventListener("input", function () {
        cond.value = input.value.split(",").map(function (x) { return x.trim(); }).filter(Boolean)
          .map(function (x) { return parseTyped(a.type, x); });
        save();
      });
      return input;
    }
    if (kind === "typed" && a.type === "bool") {
      input = select([["true", "Yes"], ["false", "No"]], cond.value === false ? "false" : "true", label, "fb-val");
      cond.value = cond.value === false ? false : true;
    } else if (kind === "typed" && a.type === "lookup" && pickers[a.target === "owner" ? "user" : a.target]) {
      var opts = (pickers[a.target === "owner" ? "user" : a.target] || []).slice();
      if (a.target === "owner") opts = opts.concat(pickers.team || []);
      input = select(opts.map(function (o) { return [o[0], o[1] + " (" + o[0] + ")"]; }), cond.value, label, "fb-val");
      if (cond.value === undefined && opts.length) cond.value = opts[0][0];
    } else {
      var type = kind === "typed" && (a.type === "int" || a.type === "choice" || a.type === "decimal") ? "number"
        : kind === "typed" && a.type === "datetime" ? "datetime-local" : "text";
      input = el("input", { "aria-label": label, cls: "fb-val", type: type });
      if (type === "number") input.setAttribute("step", a.type === "decimal" ? "any" : "1");
      if (cond.value !== undefined) input.value = type === "datetime-local" ? String(cond.value).slice(0, 16) : cond.value;
    }
    var update = function () { cond.value = parseTyped(kind === "typed" ? a.type : "string", input.value); save(); };
    input.addEventListener("input", update);
    input.addEventListener("change", update);
    return input;
  }
  function condition(cond, parent, index, path) {
    var label = "Condition " + path;
    if (attrs.indexOf(cond.attribute) < 0) cond.attribute = attrs[0];
    var ops = opsFor(cond.attribute);
    if (ops.indexOf(cond.operator) < 0) cond.operator = ops[0];
    var attr = select(attrs.map(function (n) {
      var a = spec.attributes[n];
      return [n, n + " (" + a.type + (a.target ? " → " + a.target : "") + ")"];
    }), cond.attribute, label + " attribute", "fb-attr");
    var op = select(ops.map(function (o) { return [o, o]; }), cond.operator, label + " operator", "fb-op");
    attr.addEventListener("change", function () { cond.attribute = attr.value; delete cond.value; cond.operator = null; render(); });
    op.addEventListener("change", function () { cond.operator = op.value; delete cond.value; render(); });
    var remove = el("button", { type: "button", cls: "btn small ghost fb-remove", "aria-label": "Remove condition " + path, text: "Remove" });
    remove.addEventListener("click", function () { parent.splice(index, 1); render(); });
    return el("div", { cls: "fb-cond", role: "group", "aria-label": label }, [attr, op, valueEditor(cond, label + " value"), remove]);
  }
  function group(g, level, parent, index, path) {
    var key = g.or ? "or" : "and";
    var kids = g[key];
    var match = select([["and", "all of (and)"], ["or", "any of (or)"]], key, "Group " + path + " matches", "fb-match");
    match.addEventListener("change", function () { var k = kids; delete g.and; delete g.or; g[match.value] = k; render(); });
    var body = el("div", { cls: "fb-body" });
    kids.forEach(function (c, i) {
      var p = path + "." + (i + 1);
      body.appendChild(c.and || c.or ? group(c, level + 1, kids, i, p) : condition(c, kids, i, p));
    });
    var addCond = el("button", { type: "button", cls: "btn small fb-add-cond", text: "+ Condition", "aria-label": "Add a condition to group " + path });
    addCond.addEventListener("click", function () { kids.push({ attribute: attrs[0], operator: null }); render(); focusLast(); });
    var buttons = [addCond];
    if (level < spec.max_levels) {
      var addGroup = el("button", { type: "button", cls: "btn small fb-add-group", text: "+ Group", "aria-label": "Add a nested group to group " + path });
      addGroup.addEventListener("click", function () { kids.push({ or: [] }); render(); });
      buttons.push(addGroup);
    }
    if (parent) {
      var rm = el("button", { type: "button", cls: "btn small ghost", text: "Remove group", "aria-label": "Remove group " + path });
      rm.addEventListener("click", function () { parent.splice(index, 1); render(); });
      buttons.push(rm);
    }
    var head = el("div", { cls: "fb-head" }, [el("span", { cls: "fb-level", text: "Level " + level }), match]);
    return el("div", { cls: "fb-group", role: "group", "aria-label": "Group " + path }, [head, body, el("div", { cls: "fb-head" }, buttons)]);
  }
  function save() { out.value = JSON.stringify(model); }
  function focusLast() {
    var all = root.querySelectorAll(".fb-attr");
    if (all.length) all[all.length - 1].focus();
  }
  function render() {
    root.innerHTML = "";
    root.appendChild(group(model, 1, null, 0, "1"));
    save();
  }
  // The builder shows only for the custom filter; "other" choices only for "other".
  var wrap = document.getElementById("builder-wrap");
  var others = document.getElementById("other-options");
  function showFor() {
    var k = (document.querySelector("input[name=kind]:checked") || {}).value;
    wrap.hidden = k !== "custom";
    if (others) others.hidden = k !== "other";
  }
  document.querySelectorAll("input[name=kind]").forEach(function (r) { r.addEventListener("change", showFor); });
  showFor();
  render();
})();
