// convscope report: the unit gallery of one layer (hand-written, no library).
// Data: window.convscope.gallery = {layer, units: [{c, rate, max, sel, cls, maj, dead, img,
// href}], pageSize, classes}; img is a path or a part of a sprite sheet {src, x, y, w, h}. Cards are added pageSize at a time when the end of the gallery
// scrolls into view (IntersectionObserver), so a layer of thousands of channels creates
// only a bounded number of <img> elements until the reader scrolls.
(function () {
  "use strict";
  var data = window.convscope.gallery;
  var gallery = document.getElementById("gallery");
  var more = document.getElementById("gallery-more");
  var count = document.getElementById("gallery-count");
  var root = gallery.getAttribute("data-root");
  var controls = { sort: document.getElementById("sort"), descending: document.getElementById("descending"),
                   state: document.getElementById("state"), cls: document.getElementById("cls") };
  var shown = [];
  var next = 0;

  function fmt(value) { return value === null || value === undefined ? "–" : value.toFixed(3); }

  function card(unit) {
    var link = document.createElement("a");
    link.className = "card" + (unit.dead ? " dead" : "");
    link.href = root + unit.href;
    link.setAttribute("data-channel", unit.c);
    if (unit.img) {
      var img = document.createElement("img");
      img.alt = "channel " + unit.c + " top patch";
      img.loading = "lazy";
      if (typeof unit.img === "string") {
        img.src = root + unit.img;
      } else {  // one cell of a sprite sheet, shown at its own size
        img.src = root + unit.img.src;
        img.className = "sprite";
        img.width = unit.img.w;
        img.height = unit.img.h;
        img.style.width = unit.img.w + "px";
        img.style.height = unit.img.h + "px";
        img.style.objectPosition = "-" + unit.img.x + "px -" + unit.img.y + "px";
      }
      link.appendChild(img);
    }
    var text = document.createElement("div");
    var name = document.createElement("strong");
    name.textContent = "ch " + unit.c;
    text.appendChild(name);
    if (unit.dead) {
      var badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = " dead";
      text.appendChild(badge);
    }
    var line = "rate " + fmt(unit.rate) + " · max " + fmt(unit.max);
    if (unit.sel !== null && unit.sel !== undefined) line += " · sel " + fmt(unit.sel);
    text.appendChild(document.createElement("br"));
    text.appendChild(document.createTextNode(line));
    if (unit.cls) {
      text.appendChild(document.createElement("br"));
      text.appendChild(document.createTextNode("mean: " + unit.cls));
    }
    if (unit.maj) {
      text.appendChild(document.createElement("br"));
      text.appendChild(document.createTextNode("top-k: " + unit.maj));
    }
    link.appendChild(text);
    return link;
  }

  function addPage() {
    var end = Math.min(next + data.pageSize, shown.length);
    var fragment = document.createDocumentFragment();
    for (; next < end; next++) fragment.appendChild(card(shown[next]));
    gallery.appendChild(fragment);
    more.hidden = next >= shown.length;
    count.textContent = "showing " + next + " of " + shown.length + " channels" +
      (shown.length < data.units.length ? " (" + data.units.length + " in the layer)" : "");
    // still room on screen (a short page): fill it, one page per frame
    window.requestAnimationFrame(function () {
      if (next < shown.length && more.getBoundingClientRect().top < window.innerHeight) addPage();
    });
  }

  function apply() {
    var key = controls.sort.value;
    var sign = controls.descending.checked ? -1 : 1;
    var state = controls.state.value;
    var cls = controls.cls.value;
    shown = data.units.filter(function (u) {
      if (state === "alive" && u.dead) return false;
      if (state === "dead" && !u.dead) return false;
      return !cls || u.cls === cls;
    });
    shown.sort(function (a, b) {
      var x = a[key], y = b[key];
      if (x === null || x === undefined) return 1;   // missing values last
      if (y === null || y === undefined) return -1;
      return sign * (x - y) || a.c - b.c;
    });
    gallery.textContent = "";
    next = 0;
    addPage();
  }

  ["sort", "descending", "state", "cls"].forEach(function (name) {
    controls[name].addEventListener("change", apply);
  });
  new IntersectionObserver(function (entries) {
    if (entries[0].isIntersecting && next < shown.length) addPage();
  }, { rootMargin: "200px" }).observe(more);
  apply();
})();
