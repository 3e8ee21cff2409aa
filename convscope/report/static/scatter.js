// convscope report: the t-SNE scatter in a canvas (hand-written, no library).
// Data: window.convscope.embedding = {x, y, label, pred, index, classes, attrs, sprite}.
// Colour by true class, predicted class, correct/incorrect or an attribute; the point
// under the pointer shows its thumbnail, cut from one sprite image with CSS.
(function () {
  "use strict";
  var d = window.convscope.embedding;
  var canvas = document.getElementById("scatter");
  var ctx = canvas.getContext("2d");
  var tip = document.getElementById("scatter-tip");
  var thumb = document.getElementById("scatter-thumb");
  var tipText = document.getElementById("scatter-text");
  var legend = document.getElementById("scatter-legend");
  var select = document.getElementById("colour-by");
  var root = canvas.getAttribute("data-root");
  var n = d.x.length, pad = 12;
  var palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
                 "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"];
  function range(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    return hi > lo ? [lo, hi] : [lo - 1, lo + 1];
  }
  var rx = range(d.x), ry = range(d.y);
  var px = d.x.map(function (v) { return pad + (v - rx[0]) / (rx[1] - rx[0]) * (canvas.width - 2 * pad); });
  var py = d.y.map(function (v) { return canvas.height - pad - (v - ry[0]) / (ry[1] - ry[0]) * (canvas.height - 2 * pad); });
  thumb.style.backgroundImage = "url('" + root + d.sprite.href + "')";

  function ramp(t) {  // blue (low) to red (high)
    var r = Math.round(40 + 200 * t), b = Math.round(220 - 180 * t);
    return "rgb(" + r + ",80," + b + ")";
  }
  function colouring() {
    var mode = select.value;
    if (mode === "class" || mode === "pred") {
      var ids = mode === "class" ? d.label : d.pred;
      return { colour: function (i) { return ids[i] < 0 ? "#bbb" : palette[ids[i] % palette.length]; },
               legend: d.classes.map(function (name, c) { return [name, palette[c % palette.length]]; }) };
    }
    if (mode === "correct") {
      return { colour: function (i) { return d.label[i] < 0 ? "#bbb" : d.label[i] === d.pred[i] ? "#2ca02c" : "#d62728"; },
               legend: [["correct", "#2ca02c"], ["incorrect", "#d62728"], ["no label", "#bbb"]] };
    }
    var attr = d.attrs[mode.slice(5)];
    if (attr.kind === "category") {
      return { colour: function (i) { return palette[attr.values[i] % palette.length]; },
               legend: attr.categories.map(function (name, c) { return [name, palette[c % palette.length]]; }) };
    }
    var r = range(attr.values);
    return { colour: function (i) { return attr.values[i] === null ? "#bbb" : ramp((attr.values[i] - r[0]) / (r[1] - r[0])); },
             legend: [[r[0].toFixed(3), ramp(0)], [r[1].toFixed(3), ramp(1)]] };
  }
  function draw() {
    var c = colouring();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (var i = 0; i < n; i++) {
      ctx.fillStyle = c.colour(i);
      ctx.beginPath();
      ctx.arc(px[i], py[i], 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    legend.textContent = "";
    c.legend.forEach(function (entry) {
      var item = document.createElement("span");
      item.textContent = entry[0];
      item.style.setProperty("--c", entry[1]);
      legend.appendChild(item);
    });
  }
  function nearest(mx, my) {
    var best = -1, bestDist = 100;  // within 10 px
    for (var i = 0; i < n; i++) {
      var dist = (px[i] - mx) * (px[i] - mx) + (py[i] - my) * (py[i] - my);
      if (dist < bestDist) { best = i; bestDist = dist; }
    }
    return best;
  }
  canvas.addEventListener("mousemove", function (event) {
    var box = canvas.getBoundingClientRect();
    var mx = (event.clientX - box.left) * canvas.width / box.width;
    var my = (event.clientY - box.top) * canvas.height / box.height;
    var i = nearest(mx, my);
    if (i < 0) { tip.hidden = true; return; }
    var s = d.sprite, zoom = 64 / s.tile, col = i % s.cols, row = Math.floor(i / s.cols);
    thumb.style.backgroundSize = (s.width * zoom) + "px " + (s.height * zoom) + "px";
    thumb.style.backgroundPosition = (-col * s.tile * zoom) + "px " + (-row * s.tile * zoom) + "px";
    var name = function (id) { return id >= 0 && id < d.classes.length ? d.classes[id] : "?"; };
    tipText.textContent = "image " + d.index[i] + ": " + name(d.label[i]) + ", predicted " + name(d.pred[i]);
    tip.style.left = (event.clientX - box.left + 14) + "px";
    tip.style.top = (event.clientY - box.top + 14) + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
  select.addEventListener("change", draw);
  draw();
})();
