/* slimbench leaderboard: sorting and filtering of the server-rendered tables.
 * Written into the page by the build (no external code). Strings from runs are only ever
 * set through textContent / option.value, never parsed as HTML. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lb-data").textContent);
  var form = document.getElementById("filters");
  var keys = ["family", "method", "device", "batch", "verification"];

  keys.forEach(function (key) {
    var select = form.elements.namedItem(key);
    (data.filters[key] || []).forEach(function (value) {
      var option = document.createElement("option");
      option.value = String(value);
      option.textContent = String(value);
      select.appendChild(option);
    });
  });

  function wanted() {
    var out = {};
    keys.forEach(function (key) {
      var value = form.elements.namedItem(key).value;
      if (value !== "") { out[key] = value; }
    });
    return out;
  }

  // A results row is one configuration: its devices and batch sizes are space-separated lists
  // (a device or batch filter keeps the rows that have it, and hides the other columns).
  var listed = { device: true, batch: true };

  function matches(key, have, want) {
    if (have === null) { return true; }
    return listed[key] ? have.split(" ").indexOf(want) >= 0 : have === want;
  }

  function applyColumns(want) {
    document.querySelectorAll("table.lb").forEach(function (table) {
      table.querySelectorAll("[data-col-device]").forEach(function (cell) {
        var batch = cell.getAttribute("data-col-batch");
        cell.hidden = ("device" in want && cell.getAttribute("data-col-device") !== want.device) ||
          ("batch" in want && batch !== "" && batch !== want.batch);
      });
      table.querySelectorAll("thead th.group").forEach(function (group) {
        var key = group.getAttribute("data-group");
        var subs = Array.prototype.filter.call(table.querySelectorAll("thead th[data-col][data-group]"),
          function (th) { return th.getAttribute("data-group") === key && !th.hidden; });
        group.hidden = subs.length === 0;
        if (subs.length) { group.colSpan = subs.length; }
      });
    });
  }

  function applyFilters() {
    var want = wanted();
    var shown = 0;
    var total = 0;
    applyColumns(want);
    document.querySelectorAll("section.task").forEach(function (section) {
      var sectionShown = 0;
      section.querySelectorAll("tbody tr[data-row]").forEach(function (row) {
        var ok = Object.keys(want).every(function (key) {
          return matches(key, row.getAttribute("data-" + key), want[key]);
        });
        row.hidden = !ok;
        total += 1;
        if (ok) { shown += 1; sectionShown += 1; }
      });
      section.hidden = sectionShown === 0;
    });
    document.getElementById("shown").textContent =
      "Showing " + shown + " of " + total + " rows";
  }

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell ? cell.getAttribute("data-v") : null;
    if (raw === null) { raw = cell ? cell.textContent : ""; }
    if (!numeric) { return raw.toLowerCase(); }
    return raw === "" ? null : parseFloat(raw);
  }

  function sortTable(table, th) {
    var col = th.getAttribute("data-col");  // a two-row header's cells do not line up with the body's
    var index = col !== null ? parseInt(col, 10) : Array.prototype.indexOf.call(th.parentNode.cells, th);
    var numeric = th.classList.contains("num");
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      return { row: row, i: i, v: cellValue(row, index, numeric) };
    });
    rows.sort(function (a, b) {
      if (a.v === null || b.v === null) {  // missing values always last
        return a.v === b.v ? a.i - b.i : (a.v === null ? 1 : -1);
      }
      var c = numeric ? a.v - b.v : a.v.localeCompare(b.v);
      return (ascending ? c : -c) || a.i - b.i;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }

  document.querySelectorAll("table.lb thead th").forEach(function (th) {
    var button = th.querySelector("button");
    if (button) {
      button.addEventListener("click", function () { sortTable(th.closest("table"), th); });
    }
  });
  form.addEventListener("change", applyFilters);
  form.addEventListener("reset", function () { setTimeout(applyFilters, 0); });
  applyFilters();
  document.documentElement.setAttribute("data-ready", "1");
}());
