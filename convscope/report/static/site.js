// convscope report: behaviour shared by every page (hand-written, no library, works offline).
// Tables with class "sortable": click a header to sort by that column (numbers as numbers).
// Tables with class "paged" (more than 25 rows): shown PAGE_SIZE rows at a time, with a
// search box (rows containing the text, any column) and previous/next buttons; sorting
// sorts every row, not just the page shown. Without JavaScript every row is shown.
(function () {
  "use strict";
  var PAGE_SIZE = 25;
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
  function el(tag, text) {
    var node = document.createElement(tag);
    if (text) node.textContent = text;
    return node;
  }
  function setup(table) {
    var body = table.tBodies[0];
    if (!body) return;
    var all = Array.prototype.slice.call(body.rows);
    var state = { rows: all, page: 0, paged: table.classList.contains("paged") };
    var bar = null, info = null, prev = null, next = null, search = null;
    function render() {
      var shown = state.rows;
      if (state.paged) {
        var pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
        state.page = Math.min(state.page, pages - 1);
        var start = state.page * PAGE_SIZE;
        shown = shown.slice(start, start + PAGE_SIZE);
        info.textContent = "rows " + (state.rows.length ? start + 1 : 0) + "–" + (start + shown.length) +
          " of " + state.rows.length + (state.rows.length < all.length ? " matching (" + all.length + " in all)" : "") +
          " · page " + (state.page + 1) + " of " + pages;
        prev.disabled = state.page === 0;
        next.disabled = state.page >= pages - 1;
      }
      body.textContent = "";
      shown.forEach(function (row) { body.appendChild(row); });
    }
    if (state.paged) {
      bar = el("div"); bar.className = "table-controls";
      search = el("input"); search.type = "search"; search.placeholder = "search rows";
      search.setAttribute("aria-label", "search the table's rows");
      prev = el("button", "‹ previous"); prev.type = "button"; prev.className = "prev";
      next = el("button", "next ›"); next.type = "button"; next.className = "next";
      info = el("span"); info.className = "muted page-info";
      [search, prev, next, info].forEach(function (n) { bar.appendChild(n); });
      table.parentNode.insertBefore(bar, table);
      search.addEventListener("input", function () {
        var query = search.value.trim().toLowerCase();
        state.rows = all.filter(function (row) { return !query || row.textContent.toLowerCase().indexOf(query) >= 0; });
        state.page = 0;
        render();
      });
      prev.addEventListener("click", function () { state.page -= 1; render(); });
      next.addEventListener("click", function () { state.page += 1; render(); });
    }
    var head = table.tHead;
    if (head && head.rows.length && table.classList.contains("sortable")) {
      Array.prototype.forEach.call(head.rows[0].cells, function (th, index) {
        th.title = "sort by " + th.textContent;
        th.addEventListener("click", function () {
          var ascending = th.getAttribute("aria-sort") !== "ascending";
          Array.prototype.forEach.call(head.querySelectorAll("th"), function (h) { h.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
          var order = function (r1, r2) {
            var o = compare(cellValue(r1, index), cellValue(r2, index));
            return ascending ? o : -o;
          };
          all.sort(order);
          state.rows = state.rows.slice().sort(order);
          state.page = 0;
          render();
        });
      });
    }
    render();
  }
  document.querySelectorAll("table.sortable, table.paged").forEach(setup);
})();
