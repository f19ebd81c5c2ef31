// The router's result for one resource: reads ?level=studies|series|instances&id=<orthanc id>
// and renders /bodypart-router/<level>/<id>/summary. Values are inserted as text, never as HTML.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function chips(box, counts, label, bad) {
    box.textContent = "";
    box.appendChild(el("span", label, "")).style.background = "transparent";
    Object.keys(counts).forEach(function (k) {
      box.appendChild(el("span", k + " \u00d7 " + counts[k], bad(k) ? "bad" : ""));
    });
  }
  var params = new URLSearchParams(window.location.search);
  var level = params.get("level") || "studies", id = params.get("id") || "";
  if (["studies", "series", "instances"].indexOf(level) < 0 || !/^[0-9a-f-]+$/.test(id)) {
    $("error").textContent = "expected ?level=studies|series|instances&id=<Orthanc ID>";
    $("error").style.display = "block";
    return;
  }
  $("what").textContent = level.replace(/ies$/, "y").replace(/s$/, "") + " " + id;
  fetch(level + "/" + id + "/summary", { credentials: "same-origin" }).then(function (r) {
    return r.text().then(function (t) { if (!r.ok) throw new Error(t || r.status); return JSON.parse(t); });
  }).then(function (s) {
    chips($("classes"), s.Classes, "Classes:", function () { return false; });
    chips($("states"), s.States, "States:", function (k) { return k.indexOf("failed") === 0; });
    $("shown").textContent = s.Shown < s.Instances ? "first " + s.Shown + " of " + s.Instances + " instances" : s.Instances + " instance(s)";
    var body = $("items");
    s.Items.forEach(function (i) {
      var tr = el("tr");
      var link = el("a", i.ID.slice(0, 8) + "\u2026");
      link.href = "../app/explorer.html#instance?uuid=" + encodeURIComponent(i.ID);
      link.title = i.ID;
      var td = el("td"); td.appendChild(link); tr.appendChild(td);
      tr.appendChild(el("td", i.Class || "-"));
      tr.appendChild(el("td", i.Score === null ? "-" : i.Score.toFixed(3), "num"));
      tr.appendChild(el("td", i.State + (i.Detail ? " (" + i.Detail + ")" : "")));
      tr.appendChild(el("td", i.ArrivedAt.join(", ") || "-"));
      var notYet = i.Waiting.map(function (d) { return d + " (waiting)"; })
        .concat(i.DeadLetters.map(function (d) { return d + " (dead letter)"; }));
      tr.appendChild(el("td", notYet.join(", ") || "-", i.DeadLetters.length ? "dead" : notYet.length ? "waiting" : ""));
      body.appendChild(tr);
    });
  }).catch(function (e) {
    $("error").textContent = "Cannot read the router's result: " + e.message;
    $("error").style.display = "block";
  });
})();
