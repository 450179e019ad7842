/*
 * PACS-lite series viewer: hand-written, no build step, no dependencies.
 *
 * Reads the series' DICOM JSON metadata and its pixels from DICOMweb:
 * - greyscale images as raw frames (WADO-RS frames, multipart/related; type="application/octet-stream";
 *   transfer-syntax=1.2.840.10008.1.2.1: little-endian pixels the server decodes from whatever it stores),
 *   windowed here, so window/level is instant and the value under the cursor is exact
 *   (modality values: Hounsfield units for CT, from RescaleSlope/Intercept);
 * - colour images (and any instance whose raw frames cannot be had) as rendered PNGs.
 * All frames of an instance come in one request; after the first image is shown every other one
 * is fetched (nearest first), so scrolling a long series does not wait on the network.
 *
 * Nothing from a DICOM file is ever put into the page as markup: text goes through textContent.
 */
(function () {
  "use strict";

  var EXPLICIT_LE = "1.2.840.10008.1.2.1";
  var FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=' + EXPLICIT_LE;
  var CONCURRENCY = 4;
  var WHEEL_STEP = 50;
  var MAX_LUT = 1 << 20;

  var root = document.getElementById("viewer");
  if (!root) {
    return;
  }

  function $(id) {
    return document.getElementById(id);
  }

  var canvas = $("vp-canvas");
  var ctx = canvas.getContext("2d");
  var stage = $("vp-stage");
  var slider = $("vp-slider");
  var imgCanvas = document.createElement("canvas");
  var imgCtx = imgCanvas.getContext("2d", { willReadFrequently: true });

  var images = []; // {inst, frame, px, bitmap, error}
  var instances = [];
  var view = {
    index: 0, wc: 0, ww: 1, invert: false, zoom: 1, panX: 0, panY: 0, tool: "wl",
    defaultWindow: null,
  };
  var measurements = {}; // image index -> [{x1, y1, x2, y2}]
  var drag = null;
  var painted = null;
  var drawPending = false;
  var cineTimer = null;
  var wheelAcc = 0;
  var loadedCount = 0;
  var lastPointer = null;

  // -- text ------------------------------------------------------------------------------------

  function t(key, values) {
    var name = "t" + key.charAt(0).toUpperCase() + key.slice(1);
    var text = root.dataset[name] || key;
    Object.keys(values || {}).forEach(function (k) {
      text = text.split("{" + k + "}").join(String(values[k]));
    });
    return text;
  }

  function setText(id, text) {
    var el = $(id);
    if (el && el.textContent !== text) {
      el.textContent = text;
    }
  }

  function message(text) {
    setText("vp-message", text || "");
    $("vp-message").hidden = !text;
  }

  // -- DICOM JSON --------------------------------------------------------------------------------

  function values(obj, tag) {
    var e = obj && obj[tag];
    return e && Array.isArray(e.Value) ? e.Value : null;
  }

  function first(obj, tag, fallback) {
    var v = values(obj, tag);
    return v && v.length && v[0] !== null ? v[0] : fallback;
  }

  function num(obj, tag, fallback) {
    var v = first(obj, tag, null);
    var n = typeof v === "number" ? v : parseFloat(v);
    return isFinite(n) ? n : fallback;
  }

  function nums(obj, tag, count) {
    var v = values(obj, tag);
    if (!v || v.length < count) {
      return null;
    }
    var out = v.slice(0, count).map(Number);
    return out.every(isFinite) ? out : null;
  }

  function positive(pair) {
    return pair && pair[0] > 0 && pair[1] > 0 ? pair : null;
  }

  /** The item of a functional group macro (e.g. Pixel Measures) shared by all frames of an enhanced image. */
  function shared(obj, sequence) {
    var groups = values(obj, "52009229");
    var item = groups && groups[0] && values(groups[0], sequence);
    return item && item[0] ? item[0] : null;
  }

  function describe(obj) {
    var spacing = positive(nums(obj, "00280030", 2)) || positive(nums(shared(obj, "00289110"), "00280030", 2));
    var spacingKind = spacing ? "pixel" : null;
    if (!spacing) {
      spacing = positive(nums(obj, "00181164", 2));
      spacingKind = spacing ? "imager" : null;
    }
    var transform = shared(obj, "00289145");
    var pi = String(first(obj, "00280004", "MONOCHROME2")).trim().toUpperCase();
    var spp = num(obj, "00280002", 1);
    var frameTime = num(obj, "00181063", 0);
    var rate = num(obj, "00082144", 0) || num(obj, "00180040", 0) || (frameTime > 0 ? 1000 / frameTime : 0);
    var wc = num(obj, "00281050", null);
    var ww = num(obj, "00281051", null);
    return {
      sop: String(first(obj, "00080018", "")),
      number: num(obj, "00200013", 0),
      modality: String(first(obj, "00080060", "")),
      rows: num(obj, "00280010", 0) | 0,
      cols: num(obj, "00280011", 0) | 0,
      frames: Math.max(1, num(obj, "00280008", 1) | 0),
      spp: spp,
      pi: pi,
      bitsAllocated: num(obj, "00280100", 16) | 0,
      bitsStored: num(obj, "00280101", num(obj, "00280100", 16)) | 0,
      signed: num(obj, "00280103", 0) === 1,
      slope: num(obj, "00281053", null) || num(transform, "00281053", 1) || 1,
      intercept: num(obj, "00281052", null) !== null ? num(obj, "00281052", 0) : num(transform, "00281052", 0),
      window: wc !== null && ww !== null && ww > 0 ? { c: wc, w: ww } : null,
      spacing: spacing, // [between rows (y), between columns (x)] in mm
      spacingKind: spacingKind,
      iop: nums(obj, "00200037", 6) || nums(shared(obj, "00209116"), "00200037", 6),
      patientOrientation: values(obj, "00200020"),
      rate: rate,
      gray: spp === 1 && (pi === "MONOCHROME1" || pi === "MONOCHROME2"),
      mode: null,
    };
  }

  // -- fetching pixels -----------------------------------------------------------------------------

  function seriesUrl(inst, suffix) {
    return root.dataset.seriesUrl + "/instances/" + encodeURIComponent(inst.sop) + suffix;
  }

  function boundaryOf(contentType) {
    var m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType || "");
    return m ? m[1] || m[2] : null;
  }

  function find(hay, needle, from) {
    var last = hay.length - needle.length;
    var i = from;
    while (i <= last) {
      i = hay.indexOf(needle[0], i);
      if (i < 0 || i > last) {
        return -1;
      }
      var j = 1;
      while (j < needle.length && hay[i + j] === needle[j]) {
        j++;
      }
      if (j === needle.length) {
        return i;
      }
      i++;
    }
    return -1;
  }

  /** The bodies of a multipart/related response, each in an ArrayBuffer of its own. */
  function splitMultipart(bytes, boundary) {
    var enc = new TextEncoder();
    var delimiter = enc.encode("--" + boundary);
    var next = enc.encode("\r\n--" + boundary);
    var crlf = enc.encode("\r\n");
    var blank = enc.encode("\r\n\r\n");
    var parts = [];
    var pos = find(bytes, delimiter, 0);
    if (pos < 0) {
      throw new Error("no multipart boundary");
    }
    for (;;) {
      pos += delimiter.length;
      if (bytes[pos] === 45 && bytes[pos + 1] === 45) {
        return parts;
      }
      var lineEnd = find(bytes, crlf, pos);
      var headEnd = lineEnd < 0 ? -1 : find(bytes, blank, lineEnd);
      if (headEnd < 0) {
        throw new Error("malformed multipart part");
      }
      var start = headEnd + 4;
      var end = find(bytes, next, start);
      if (end < 0) {
        throw new Error("unterminated multipart part");
      }
      parts.push(bytes.slice(start, end).buffer);
      pos = end + 2;
    }
  }

  function typedFrame(inst, buffer) {
    var n = inst.rows * inst.cols;
    var ba = inst.bitsAllocated;
    var data;
    if (ba === 1) {
      var packed = new Uint8Array(buffer);
      data = new Uint8Array(n);
      for (var b = 0; b < n; b++) {
        data[b] = (packed[b >> 3] >> (b & 7)) & 1;
      }
      return data;
    }
    if (buffer.byteLength < (n * ba) / 8) {
      throw new Error("frame shorter than Rows x Columns");
    }
    if (ba === 8) {
      data = inst.signed ? new Int8Array(buffer, 0, n) : new Uint8Array(buffer, 0, n);
    } else if (ba === 16) {
      data = inst.signed ? new Int16Array(buffer, 0, n) : new Uint16Array(buffer, 0, n);
    } else if (ba === 32) {
      data = inst.signed ? new Int32Array(buffer, 0, n) : new Uint32Array(buffer, 0, n);
    } else {
      throw new Error("unsupported Bits Allocated " + ba);
    }
    var bits = inst.bitsStored;
    if (bits > 0 && bits < ba) {
      var mask = bits >= 32 ? 0xffffffff : Math.pow(2, bits) - 1;
      var sign = Math.pow(2, bits - 1);
      var full = Math.pow(2, bits);
      for (var i = 0; i < n; i++) {
        var v = (data[i] >>> 0) & mask;
        data[i] = inst.signed && v >= sign ? v - full : v;
      }
    }
    return data;
  }

  function grayPixels(inst, buffer) {
    var data = typedFrame(inst, buffer);
    var min = Infinity;
    var max = -Infinity;
    for (var i = 0; i < data.length; i++) {
      var v = data[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    return { data: data, min: min, max: max };
  }

  function imagesOf(inst) {
    return images.filter(function (img) {
      return img.inst === inst;
    });
  }

  function loadRaw(inst) {
    var list = [];
    for (var f = 1; f <= inst.frames; f++) {
      list.push(f);
    }
    return fetch(seriesUrl(inst, "/frames/" + list.join(",")), { headers: { Accept: FRAME_ACCEPT } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("frames: HTTP " + response.status);
        }
        var boundary = boundaryOf(response.headers.get("Content-Type"));
        return response.arrayBuffer().then(function (body) {
          var parts = boundary ? splitMultipart(new Uint8Array(body), boundary) : [body];
          if (parts.length !== inst.frames) {
            throw new Error("frames: expected " + inst.frames + " parts, got " + parts.length);
          }
          var own = imagesOf(inst);
          own.forEach(function (img, k) {
            img.px = grayPixels(inst, parts[k]);
          });
        });
      });
  }

  function loadRenderedFrame(img) {
    var url = seriesUrl(img.inst, "/frames/" + img.frame + "/rendered");
    return fetch(url, { headers: { Accept: "image/png" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("rendered: HTTP " + response.status);
        }
        return response.blob();
      })
      .then(function (blob) {
        return createImageBitmap(blob);
      })
      .then(function (bitmap) {
        img.bitmap = bitmap;
      });
  }

  function loadRendered(inst) {
    inst.mode = "rendered";
    var own = imagesOf(inst);
    var chain = Promise.resolve();
    own.forEach(function (img) {
      chain = chain.then(function () {
        return loadRenderedFrame(img).catch(function (err) {
          img.error = err;
        });
      });
    });
    return chain;
  }

  var loading = new Map();

  function load(inst) {
    if (!loading.has(inst)) {
      var promise = (inst.gray ? loadRaw(inst).catch(function () {
        return loadRendered(inst);
      }) : loadRendered(inst)).then(function () {
        inst.done = true;
        loadedCount += imagesOf(inst).length;
        root.dataset.loaded = String(loadedCount);
        setText("vp-status", loadedCount < images.length ? t("loaded", { n: loadedCount, total: images.length }) : "");
        if (loadedCount >= images.length) {
          root.dataset.prefetched = "true";
        }
        var current = images[view.index];
        if (current && current.inst === inst) {
          scheduleDraw();
        }
      });
      loading.set(inst, promise);
    }
    return loading.get(inst);
  }

  function prefetchAll() {
    var here = images[view.index] ? images[view.index].inst : null;
    var position = new Map();
    images.forEach(function (img, i) {
      if (!position.has(img.inst)) position.set(img.inst, i);
    });
    var order = instances.filter(function (inst) {
      return inst !== here;
    }).sort(function (a, b) {
      return Math.abs(position.get(a) - view.index) - Math.abs(position.get(b) - view.index);
    });
    var next = 0;
    function worker() {
      if (next >= order.length) {
        return Promise.resolve();
      }
      var inst = order[next++];
      return load(inst).catch(function () {}).then(worker);
    }
    var workers = [];
    for (var k = 0; k < CONCURRENCY; k++) {
      workers.push(worker());
    }
    return Promise.all(workers);
  }

  function loaded(img) {
    return Boolean(img && (img.px || img.bitmap));
  }

  // -- window / level ------------------------------------------------------------------------------

  function modalityRange(img) {
    var inst = img.inst;
    var a = img.px.min * inst.slope + inst.intercept;
    var b = img.px.max * inst.slope + inst.intercept;
    return a <= b ? [a, b] : [b, a];
  }

  function autoWindow(img) {
    var r = modalityRange(img);
    return { c: (r[0] + r[1]) / 2, w: Math.max(r[1] - r[0], img.inst.bitsAllocated === 8 ? 1 : 1e-3) };
  }

  function setWindow(c, w) {
    view.wc = c;
    view.ww = Math.max(w, 1e-3);
    scheduleDraw();
  }

  function applyPreset(key, button) {
    var img = images[view.index];
    if (key === "default") {
      if (view.defaultWindow) setWindow(view.defaultWindow.c, view.defaultWindow.w);
    } else if (key === "auto") {
      if (img && img.px) {
        var a = autoWindow(img);
        setWindow(a.c, a.w);
      }
    } else if (button) {
      setWindow(parseFloat(button.dataset.wc), parseFloat(button.dataset.ww));
    }
  }

  function grayValue(m, invert) {
    var y = (m - view.wc) / view.ww + 0.5;
    var g = y <= 0 ? 0 : y >= 1 ? 255 : Math.round(y * 255);
    return invert ? 255 - g : g;
  }

  function paint(img) {
    var inst = img.inst;
    if (imgCanvas.width !== inst.cols || imgCanvas.height !== inst.rows) {
      imgCanvas.width = inst.cols;
      imgCanvas.height = inst.rows;
    }
    if (img.bitmap) {
      imgCtx.clearRect(0, 0, inst.cols, inst.rows);
      imgCtx.drawImage(img.bitmap, 0, 0, inst.cols, inst.rows);
      return;
    }
    var px = img.px;
    var invert = (inst.pi === "MONOCHROME1") !== view.invert;
    var out = imgCtx.createImageData(inst.cols, inst.rows);
    var out32 = new Uint32Array(out.data.buffer);
    var n = px.data.length;
    var range = px.max - px.min + 1;
    var i;
    if (range <= MAX_LUT) {
      var lut = new Uint32Array(range);
      for (var v = 0; v < range; v++) {
        var g = grayValue((v + px.min) * inst.slope + inst.intercept, invert);
        lut[v] = 0xff000000 | (g << 16) | (g << 8) | g;
      }
      var offset = px.min;
      var data = px.data;
      for (i = 0; i < n; i++) {
        out32[i] = lut[data[i] - offset];
      }
    } else {
      for (i = 0; i < n; i++) {
        var h = grayValue(px.data[i] * inst.slope + inst.intercept, invert);
        out32[i] = 0xff000000 | (h << 16) | (h << 8) | h;
      }
    }
    imgCtx.putImageData(out, 0, 0);
  }

  // -- geometry ------------------------------------------------------------------------------------

  function viewport() {
    return { w: stage.clientWidth, h: stage.clientHeight };
  }

  function geometry() {
    var img = images[view.index];
    var vp = viewport();
    if (!img) return null;
    var w = img.inst.cols;
    var h = img.inst.rows;
    var fit = Math.min(vp.w / w, vp.h / h) || 1;
    var s = fit * view.zoom;
    return { s: s, fit: fit, tx: (vp.w - w * s) / 2 + view.panX, ty: (vp.h - h * s) / 2 + view.panY, w: w, h: h };
  }

  function toImage(x, y) {
    var g = geometry();
    return g ? { x: (x - g.tx) / g.s, y: (y - g.ty) / g.s } : null;
  }

  function toScreen(p) {
    var g = geometry();
    return { x: g.tx + p.x * g.s, y: g.ty + p.y * g.s };
  }

  function zoomAbout(factor, x, y) {
    var g = geometry();
    if (!g) return;
    var zoom = Math.min(Math.max(view.zoom * factor, 0.05), 50);
    var ix = (x - g.tx) / g.s;
    var iy = (y - g.ty) / g.s;
    var s2 = g.fit * zoom;
    var vp = viewport();
    view.zoom = zoom;
    view.panX = x - ix * s2 - (vp.w - g.w * s2) / 2;
    view.panY = y - iy * s2 - (vp.h - g.h * s2) / 2;
    scheduleDraw();
  }

  function lengthText(m, inst) {
    var dx = m.x2 - m.x1;
    var dy = m.y2 - m.y1;
    if (inst.spacing) {
      var mm = Math.sqrt(Math.pow(dx * inst.spacing[1], 2) + Math.pow(dy * inst.spacing[0], 2));
      return mm.toFixed(1) + " mm";
    }
    return Math.sqrt(dx * dx + dy * dy).toFixed(1) + " px";
  }

  // -- orientation ---------------------------------------------------------------------------------

  function directionLetters(v) {
    var axes = [
      [v[0], "L", "R"],
      [v[1], "P", "A"],
      [v[2], "S", "I"],
    ];
    axes.sort(function (a, b) {
      return Math.abs(b[0]) - Math.abs(a[0]);
    });
    return axes.filter(function (a) {
      return Math.abs(a[0]) > 0.25;
    }).map(function (a) {
      return a[0] > 0 ? a[1] : a[2];
    }).join("");
  }

  var OPPOSITE = { L: "R", R: "L", A: "P", P: "A", H: "F", F: "H", S: "I", I: "S" };

  function opposite(letters) {
    return letters.split("").map(function (c) {
      return OPPOSITE[c] || "";
    }).join("");
  }

  function orientation(inst) {
    if (inst.iop) {
      var row = inst.iop.slice(0, 3);
      var col = inst.iop.slice(3, 6);
      var right = directionLetters(row);
      var bottom = directionLetters(col);
      return { right: right, left: opposite(right), bottom: bottom, top: opposite(bottom) };
    }
    var po = inst.patientOrientation;
    if (po && po.length >= 2) {
      var clean = function (s) {
        return String(s || "").toUpperCase().replace(/H/g, "S").replace(/F/g, "I").replace(/[^LRAPSI]/g, "");
      };
      var r = clean(po[0]);
      var b = clean(po[1]);
      return { right: r, left: opposite(r), bottom: b, top: opposite(b) };
    }
    return { right: "", left: "", bottom: "", top: "" };
  }

  // -- drawing -------------------------------------------------------------------------------------

  function scheduleDraw() {
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(draw);
    }
  }

  function draw() {
    drawPending = false;
    var vp = viewport();
    var dpr = window.devicePixelRatio || 1;
    var cw = Math.max(1, Math.round(vp.w * dpr));
    var ch = Math.max(1, Math.round(vp.h * dpr));
    if (canvas.width !== cw || canvas.height !== ch) {
      canvas.width = cw;
      canvas.height = ch;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, cw, ch);
    var img = images[view.index];
    if (!img) return;
    if (!loaded(img)) {
      updateReadouts();
      message(img.error || img.inst.done ? t("failed") : t("loading"));
      if (!loading.has(img.inst)) load(img.inst);
      if (img.inst.done && root.dataset.state === "loading") root.dataset.state = "error";
      return;
    }
    message("");
    if (img.px && !view.defaultWindow) {
      view.defaultWindow = img.inst.window || autoWindow(img);
      view.wc = view.defaultWindow.c;
      view.ww = view.defaultWindow.w;
    }
    var key = [view.index, view.wc, view.ww, view.invert].join("|");
    if (painted !== key) {
      paint(img);
      painted = key;
    }
    var g = geometry();
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = g.s < 4;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(imgCanvas, g.tx, g.ty, g.w * g.s, g.h * g.s);
    drawMeasurements(img);
    updateReadouts();
    if (root.dataset.state !== "ready") {
      root.dataset.state = "ready";
      prefetchAll();
    }
  }

  function drawMeasurements(img) {
    var list = (measurements[view.index] || []).slice();
    if (drag && drag.kind === "measure" && drag.m) list.push(drag.m);
    ctx.lineWidth = 1.5;
    ctx.font = "13px system-ui, sans-serif";
    list.forEach(function (m) {
      var a = toScreen({ x: m.x1, y: m.y1 });
      var b = toScreen({ x: m.x2, y: m.y2 });
      ctx.strokeStyle = "#ffd400";
      ctx.fillStyle = "#ffd400";
      ctx.beginPath();
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(b.x, b.y);
      ctx.stroke();
      [a, b].forEach(function (p) {
        ctx.beginPath();
        ctx.arc(p.x, p.y, 3, 0, 2 * Math.PI);
        ctx.fill();
      });
      var label = lengthText(m, img.inst);
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#000";
      ctx.strokeText(label, b.x + 6, b.y - 6);
      ctx.fillText(label, b.x + 6, b.y - 6);
      ctx.lineWidth = 1.5;
    });
  }

  function updateReadouts() {
    var img = images[view.index];
    root.dataset.index = String(view.index);
    if (!img) return;
    setText("vp-position", t("image", { n: view.index + 1, total: images.length }));
    setText("vp-frame", img.inst.frames > 1 ? t("frame", { n: img.frame, total: img.inst.frames }) : "");
    var gray = Boolean(img.px);
    setText("vp-window", gray ? t("window", { w: round(view.ww), c: round(view.wc) }) : "");
    var g = geometry();
    setText("vp-zoom", g ? t("zoom", { z: Math.round(g.s * 100) }) : "");
    var o = orientation(img.inst);
    setText("vp-orient-top", o.top);
    setText("vp-orient-bottom", o.bottom);
    setText("vp-orient-left", o.left);
    setText("vp-orient-right", o.right);
    if (String(slider.value) !== String(view.index + 1)) slider.value = String(view.index + 1);
    var list = measurements[view.index] || [];
    setText("vp-measure", list.length ? t("length", { l: lengthText(list[list.length - 1], img.inst) }) : "");
    if (lastPointer) pixelReadout(lastPointer.x, lastPointer.y);
  }

  function round(v) {
    return Math.abs(v) >= 10 ? String(Math.round(v)) : String(Math.round(v * 100) / 100);
  }

  function pixelReadout(x, y) {
    var img = images[view.index];
    var p = toImage(x, y);
    if (!img || !loaded(img) || !p) return setText("vp-pixel", "");
    var ix = Math.floor(p.x);
    var iy = Math.floor(p.y);
    if (ix < 0 || iy < 0 || ix >= img.inst.cols || iy >= img.inst.rows) return setText("vp-pixel", "");
    var text;
    if (img.px) {
      var m = img.px.data[iy * img.inst.cols + ix] * img.inst.slope + img.inst.intercept;
      text = img.inst.modality === "CT" ? Math.round(m) + " HU" : round(m);
    } else {
      var d = imgCtx.getImageData(ix, iy, 1, 1).data;
      text = "R " + d[0] + " G " + d[1] + " B " + d[2];
    }
    setText("vp-pixel", "(" + ix + ", " + iy + ") " + text);
  }

  // -- navigation ----------------------------------------------------------------------------------

  function show(index) {
    if (!images.length) return;
    var i = Math.min(Math.max(index, 0), images.length - 1);
    if (i === view.index && root.dataset.index === String(i)) return;
    view.index = i;
    var img = images[i];
    if (!loaded(img) && !loading.has(img.inst)) load(img.inst);
    scheduleDraw();
  }

  function step(delta) {
    show(view.index + delta);
  }

  function setTool(tool) {
    view.tool = tool;
    root.dataset.tool = tool;
    Array.prototype.forEach.call(root.querySelectorAll("[data-tool]"), function (b) {
      b.setAttribute("aria-pressed", b.dataset.tool === tool ? "true" : "false");
    });
  }

  function resetView() {
    view.zoom = 1;
    view.panX = 0;
    view.panY = 0;
    view.invert = false;
    if (view.defaultWindow) setWindow(view.defaultWindow.c, view.defaultWindow.w);
    scheduleDraw();
  }

  function playing() {
    return cineTimer !== null;
  }

  function toggleCine() {
    var button = $("vp-play");
    if (playing()) {
      clearInterval(cineTimer);
      cineTimer = null;
      button.textContent = t("play");
      root.dataset.playing = "false";
      return;
    }
    var fps = parseFloat($("vp-fps").value) || 10;
    cineTimer = setInterval(function () {
      var next = (view.index + 1) % images.length;
      if (loaded(images[next])) show(next);
      else if (!loading.has(images[next].inst)) load(images[next].inst);
    }, 1000 / fps);
    button.textContent = t("pause");
    root.dataset.playing = "true";
  }

  // -- input ---------------------------------------------------------------------------------------

  function local(e) {
    var r = canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  }

  canvas.addEventListener("contextmenu", function (e) {
    e.preventDefault();
  });

  canvas.addEventListener("pointerdown", function (e) {
    var p = local(e);
    var kind = e.button === 1 ? "pan" : e.button === 2 ? "zoom" : view.tool;
    canvas.focus({ preventScroll: true });
    canvas.setPointerCapture(e.pointerId);
    drag = { kind: kind, x: p.x, y: p.y, lastX: p.x, lastY: p.y, wc: view.wc, ww: view.ww, m: null };
    if (kind === "measure") {
      var q = toImage(p.x, p.y);
      if (q) drag.m = { x1: q.x, y1: q.y, x2: q.x, y2: q.y };
    }
    e.preventDefault();
  });

  canvas.addEventListener("pointermove", function (e) {
    var p = local(e);
    lastPointer = p;
    pixelReadout(p.x, p.y);
    if (!drag) return;
    var dx = p.x - drag.lastX;
    var dy = p.y - drag.lastY;
    drag.lastX = p.x;
    drag.lastY = p.y;
    var img = images[view.index];
    if (drag.kind === "wl") {
      if (img && img.px) {
        var r = modalityRange(img);
        var k = Math.max((r[1] - r[0]) / 512, img.inst.bitsAllocated === 8 ? 0.5 : 0.01);
        setWindow(view.wc + dy * k, view.ww + dx * k);
      }
    } else if (drag.kind === "pan") {
      view.panX += dx;
      view.panY += dy;
      scheduleDraw();
    } else if (drag.kind === "zoom") {
      zoomAbout(Math.exp(-dy * 0.01), drag.x, drag.y);
    } else if (drag.kind === "measure" && drag.m) {
      var q = toImage(p.x, p.y);
      drag.m.x2 = q.x;
      drag.m.y2 = q.y;
      scheduleDraw();
    }
  });

  function endDrag(e) {
    if (!drag) return;
    if (drag.kind === "measure" && drag.m) {
      var m = drag.m;
      var g = geometry();
      if (g && Math.hypot(m.x2 - m.x1, m.y2 - m.y1) * g.s >= 3) {
        (measurements[view.index] = measurements[view.index] || []).push(m);
      }
    }
    drag = null;
    if (e && canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
    scheduleDraw();
  }

  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", function () {
    if (!drag) {
      lastPointer = null;
      setText("vp-pixel", "");
    }
  });

  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var dy = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
    if (e.ctrlKey || e.metaKey) {
      var p = local(e);
      zoomAbout(Math.exp(-dy * 0.002), p.x, p.y);
      return;
    }
    wheelAcc += dy;
    if (Math.abs(wheelAcc) >= WHEEL_STEP) {
      step(wheelAcc > 0 ? 1 : -1);
      wheelAcc = 0;
    }
  }, { passive: false });

  document.addEventListener("keydown", function (e) {
    var target = e.target;
    var tag = target && target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (tag === "BUTTON" && (e.key === " " || e.key === "Enter")) return;
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    var handled = true;
    switch (e.key) {
      case "ArrowDown":
      case "ArrowRight":
      case "PageDown":
        step(1);
        break;
      case "ArrowUp":
      case "ArrowLeft":
      case "PageUp":
        step(-1);
        break;
      case "Home":
        show(0);
        break;
      case "End":
        show(images.length - 1);
        break;
      case "+":
      case "=":
        zoomAbout(1.25, viewport().w / 2, viewport().h / 2);
        break;
      case "-":
        zoomAbout(0.8, viewport().w / 2, viewport().h / 2);
        break;
      case "r":
      case "R":
        resetView();
        break;
      case "i":
      case "I":
        view.invert = !view.invert;
        scheduleDraw();
        break;
      case " ":
        toggleCine();
        break;
      case "Escape":
      case "Delete":
        delete measurements[view.index];
        scheduleDraw();
        break;
      default:
        if (/^[1-9]$/.test(e.key)) {
          var buttons = root.querySelectorAll("[data-preset][data-ww]");
          var b = buttons[parseInt(e.key, 10) - 1];
          if (b) applyPreset(b.dataset.preset, b);
          else handled = false;
        } else {
          handled = false;
        }
    }
    if (handled) e.preventDefault();
  });

  slider.addEventListener("input", function () {
    show(parseInt(slider.value, 10) - 1);
  });
  $("vp-prev").addEventListener("click", function () {
    step(-1);
  });
  $("vp-next").addEventListener("click", function () {
    step(1);
  });
  $("vp-play").addEventListener("click", toggleCine);
  $("vp-fps").addEventListener("change", function () {
    if (playing()) {
      toggleCine();
      toggleCine();
    }
  });

  root.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("button") : null;
    if (!b || !root.contains(b)) return;
    if (b.dataset.tool) setTool(b.dataset.tool);
    else if (b.dataset.preset) applyPreset(b.dataset.preset, b);
    else if (b.dataset.action === "fit") {
      view.zoom = 1;
      view.panX = view.panY = 0;
      scheduleDraw();
    } else if (b.dataset.action === "actual") {
      var g = geometry();
      if (g) {
        view.zoom = 1 / g.fit;
        view.panX = view.panY = 0;
        scheduleDraw();
      }
    } else if (b.dataset.action === "invert") {
      view.invert = !view.invert;
      scheduleDraw();
    } else if (b.dataset.action === "reset") resetView();
    else if (b.dataset.action === "clear") {
      measurements = {};
      scheduleDraw();
    }
  });

  if (window.ResizeObserver) {
    new ResizeObserver(scheduleDraw).observe(stage);
  } else {
    window.addEventListener("resize", scheduleDraw);
  }

  // -- start ---------------------------------------------------------------------------------------

  function fail(text) {
    root.dataset.state = "error";
    message(text);
  }

  function start(metadata) {
    instances = metadata.map(describe).filter(function (inst) {
      return inst.rows > 0 && inst.cols > 0 && inst.sop;
    });
    instances.sort(function (a, b) {
      return a.number - b.number;
    });
    instances.forEach(function (inst) {
      for (var f = 1; f <= inst.frames; f++) {
        images.push({ inst: inst, frame: f, px: null, bitmap: null, error: null });
      }
    });
    root.dataset.count = String(images.length);
    if (!images.length) return fail(t("noimage"));
    slider.max = String(images.length);
    slider.disabled = images.length < 2;
    $("vp-play").disabled = images.length < 2;
    var rate = instances[0].rate;
    if (rate > 0) {
      var fps = $("vp-fps");
      var value = String(Math.round(rate));
      if (!Array.prototype.some.call(fps.options, function (o) { return o.value === value; })) {
        var option = document.createElement("option");
        option.value = value;
        option.textContent = value;
        fps.appendChild(option);
      }
      fps.value = value;
    }
    setTool("wl");
    message(t("loading"));
    load(images[0].inst).then(scheduleDraw, function () {
      fail(t("failed"));
    });
  }

  fetch(root.dataset.metadataUrl, { headers: { Accept: "application/dicom+json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("metadata: HTTP " + response.status);
      return response.json();
    })
    .then(start, function () {
      fail(t("failed"));
    });
})();
