// convscope report: behaviour shared by every page (hand-written, no library).
// Tables with class "sortable": click a header to sort by that column (numbers as numbers).
(function () {
  "use strict";
  function cellValue(row, i) {
    var text = row.cells[i] ? row.cells[i].textContent.trim() : "";
    var number = parseFloat(text);
    return { text: text, number: isNaN(number) || !/^[-+]?[0-9.]/.test(text) ? null : number };
  }
  function compare(a, b) {
    if (a.number !== null && b.number !== null) return a.number - b.number;
    if (a.number !== null) return -1;
    if (b.number !== null) return 1;
    return a.text.localeCompare(b.text);
  }
  function sortBy(table, th, index) {
    var body = table.tBodies[0];
    if (!body) return;
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.querySelectorAll("th"), function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var order = compare(cellValue(r1, index), cellValue(r2, index));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var head = table.tHead;
    if (!head || !head.rows.length) return;
    Array.prototype.forEach.call(head.rows[0].cells, function (th, index) {
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortBy(table, th, index); });
    });
  });
})();
