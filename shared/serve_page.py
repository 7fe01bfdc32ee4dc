"""The try-it page of `dlapps serve` (GET /): every model, its signatures, and a form per model
that sends a real :predict request and shows the answer. One page, no front-end framework.

String inputs named like binary data (image, audio, wav, bytes) get a file picker and are sent
as {"b64": ...}; other string inputs a text box (one instance per line); numeric inputs a JSON
box. Answers are shown as JSON, and drawn where that helps: boxes over the uploaded image
(detect), uint8 image batches as pictures (generate), text outputs as text (asr, translate).
"""

from __future__ import annotations

import html
import json

BINARY_NAMES = ("image", "images", "audio", "wav", "bytes", "encoded")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dlapps serve</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
code, pre, textarea { font: 13px ui-monospace, monospace; } pre { background: #f6f6f6; padding: .6em; overflow: auto; max-height: 24em; }
textarea { width: 100%; height: 4.5em; } .sig { color: #555; } button { padding: .3em 1.2em; }
canvas { border: 1px solid #ccc; margin: .3em .3em 0 0; image-rendering: pixelated; }
</style></head><body>
<h1>dlapps serve</h1>
<p>TensorFlow Serving's REST API: <code>POST /v1/models/NAME:predict</code> with
<code>{"instances": [...]}</code>. Status: <code>GET /v1/models/NAME</code>; signatures:
<code>GET /v1/models/NAME/metadata</code>; <a href="/metrics">/metrics</a>, <a href="/healthz">/healthz</a>.</p>
__MODELS__
<script>
const MODELS = __DATA__;
const BINARY = __BINARY__;
const isBinary = (name, info) => info.dtype === "DT_STRING" && BINARY.some(b => name.toLowerCase().includes(b));
function toB64(file) {
  return new Promise(done => { const r = new FileReader(); r.onload = () => done(r.result.split(",")[1]); r.readAsDataURL(file); });
}
async function send(model) {
  const form = document.getElementById("form-" + model);
  const signature = form.querySelector("select").value;
  const inputs = MODELS[model].signatures[signature].inputs;
  const columns = {}; let files = [];
  for (const [name, info] of Object.entries(inputs)) {
    const field = form.querySelector(`[data-input="${name}"]`);
    if (field.type === "file") {
      files = Array.from(field.files);
      columns[name] = await Promise.all(files.map(async f => ({b64: await toB64(f)})));
    } else if (info.dtype === "DT_STRING") {
      columns[name] = field.value.split("\\n").filter(line => line.length);
    } else {
      columns[name] = JSON.parse(field.value || "null");
    }
  }
  const body = {signature_name: signature, inputs: columns};
  const out = document.getElementById("out-" + model), pictures = document.getElementById("pictures-" + model);
  out.textContent = "..."; pictures.innerHTML = "";
  const response = await fetch(`/v1/models/${model}:predict`, {method: "POST", body: JSON.stringify(body)});
  const answer = await response.json();
  out.textContent = `HTTP ${response.status}\\n` + JSON.stringify(answer, null, 1).slice(0, 20000);
  if (response.ok) draw(answer.outputs, files, pictures);
}
function draw(outputs, files, pictures) {
  if (!outputs || typeof outputs !== "object" || Array.isArray(outputs)) return;
  const boxes = outputs.boxes, images = outputs.images || outputs.image;
  if (boxes && files.length) {
    files.forEach((file, i) => {
      const img = new Image();
      img.onload = () => {
        const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
        const g = c.getContext("2d"); g.drawImage(img, 0, 0); g.lineWidth = 2; g.font = "14px sans-serif";
        const count = outputs.count ? outputs.count[i] : boxes[i].length;
        for (let k = 0; k < count; k++) {
          const [x1, y1, x2, y2] = boxes[i][k]; g.strokeStyle = g.fillStyle = "#e4002b"; g.strokeRect(x1, y1, x2 - x1, y2 - y1);
          const label = (outputs.class_names ? outputs.class_names[i][k] : "") + (outputs.scores ? " " + outputs.scores[i][k].toFixed(2) : "");
          g.fillText(label, x1 + 2, Math.max(12, y1 - 3));
        }
        pictures.appendChild(c);
      };
      img.src = URL.createObjectURL(file);
    });
  }
  if (Array.isArray(images) && Array.isArray(images[0]) && Array.isArray(images[0][0])) {
    images.slice(0, 64).forEach(pixels => {
      const h = pixels.length, w = pixels[0].length, c = document.createElement("canvas");
      c.width = w; c.height = h; c.style.width = (w * 3) + "px";
      const g = c.getContext("2d"), data = g.createImageData(w, h);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
        const v = pixels[y][x], rgb = Array.isArray(v) ? (v.length === 1 ? [v[0], v[0], v[0]] : v) : [v, v, v];
        const o = 4 * (y * w + x); data.data[o] = rgb[0]; data.data[o + 1] = rgb[1]; data.data[o + 2] = rgb[2]; data.data[o + 3] = 255;
      }
      g.putImageData(data, 0, 0); pictures.appendChild(c);
    });
  }
}
function switchSignature(model) {
  const form = document.getElementById("form-" + model), signature = form.querySelector("select").value;
  form.querySelectorAll(".fields").forEach(f => f.hidden = f.dataset.signature !== signature);
}
</script></body></html>"""


def _fields(model: str, signature: str, definition: dict) -> str:
    rows = []
    for name, info in sorted(definition["inputs"].items()):
        dims = ",".join(d["size"] for d in info["tensor_shape"]["dim"])
        label = f"<code>{html.escape(name)}</code> <span class=sig>{info['dtype']}[{dims}]</span>"
        if info["dtype"] == "DT_STRING" and any(b in name.lower() for b in BINARY_NAMES):
            field = f'<input type=file multiple data-input="{html.escape(name)}">'
        elif info["dtype"] == "DT_STRING":
            field = f'<textarea data-input="{html.escape(name)}" placeholder="one input per line"></textarea>'
        else:
            example = "[[0.0]]" if len(info["tensor_shape"]["dim"]) > 1 else "[1]"
            field = f'<textarea data-input="{html.escape(name)}" placeholder="JSON, e.g. {example}"></textarea>'
        rows.append(f"<p>{label}<br>{field}</p>")
    return "".join(rows)


def render(models: dict) -> str:
    """The page for {model: {"version", "signatures"} or {"error"}}."""
    sections = []
    for model, described in models.items():
        title = f"<h2>{html.escape(model)}</h2>"
        if "error" in described:
            sections.append(f"{title}<p>{html.escape(described['error'])}</p>")
            continue
        signatures = described["signatures"]
        names = sorted(signatures, key=lambda n: (n != "serving_default", n))
        options = "".join(f"<option>{html.escape(n)}</option>" for n in names)
        fields = "".join(
            f'<div class=fields data-signature="{html.escape(n)}"{"" if i == 0 else " hidden"}>{_fields(model, n, signatures[n])}</div>'
            for i, n in enumerate(names)
        )
        outputs = ", ".join(sorted(signatures[names[0]]["outputs"]))
        sections.append(
            f'{title}<p>version {described["version"]}; outputs of <code>{html.escape(names[0])}</code>: {html.escape(outputs)}</p>'
            f'<form id="form-{html.escape(model)}" onsubmit="send(\'{html.escape(model)}\'); return false">'
            f'<p>signature <select onchange="switchSignature(\'{html.escape(model)}\')">{options}</select></p>{fields}'
            f'<button type=submit>Predict</button></form>'
            f'<div id="pictures-{html.escape(model)}"></div><pre id="out-{html.escape(model)}"></pre>'
        )
    if not sections:
        sections.append("<p>No exported models yet: <code>dlapps APP export</code> writes them.</p>")
    return (PAGE.replace("__MODELS__", "\n".join(sections))
            .replace("__DATA__", json.dumps(models).replace("</", "<\\/"))
            .replace("__BINARY__", json.dumps(BINARY_NAMES)))
