// convscope report: zoom (wheel, buttons) and pan (drag) of an image in a .zoom-view box
// (hand-written, no library).
(function () {
  "use strict";
  var view = document.getElementById("mosaic-view");
  var img = document.getElementById("mosaic");
  if (!view || !img) return;
  var scale = 1, x = 0, y = 0, drag = null;

  function draw() { img.style.transform = "translate(" + x + "px," + y + "px) scale(" + scale + ")"; }
  function fit() {
    var w = img.naturalWidth || 1, h = img.naturalHeight || 1;
    scale = Math.min(view.clientWidth / w, view.clientHeight / h);
    x = (view.clientWidth - w * scale) / 2;
    y = (view.clientHeight - h * scale) / 2;
    draw();
  }
  function zoomAt(factor, px, py) {
    var next = Math.max(0.05, Math.min(64, scale * factor));
    x = px - (px - x) * next / scale;
    y = py - (py - y) * next / scale;
    scale = next;
    draw();
  }
  view.addEventListener("wheel", function (event) {
    event.preventDefault();
    var box = view.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.25 : 0.8, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  view.addEventListener("pointerdown", function (event) {
    drag = { x: event.clientX - x, y: event.clientY - y };
    view.setPointerCapture(event.pointerId);
    view.style.cursor = "grabbing";
  });
  view.addEventListener("pointermove", function (event) {
    if (!drag) return;
    x = event.clientX - drag.x;
    y = event.clientY - drag.y;
    draw();
  });
  view.addEventListener("pointerup", function () { drag = null; view.style.cursor = "grab"; });
  document.getElementById("zoom-in").addEventListener("click", function () { zoomAt(1.5, view.clientWidth / 2, view.clientHeight / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomAt(1 / 1.5, view.clientWidth / 2, view.clientHeight / 2); });
  document.getElementById("zoom-reset").addEventListener("click", fit);
  if (img.complete) fit(); else img.addEventListener("load", fit);
})();
