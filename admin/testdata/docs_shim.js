const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const doc = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const script = html.split("<script>")[1].split("</script>")[0];
let count = 0, texts = [];
function mk(tag) {
  count++;
  const e = { tag, children: [], dataset: {}, style: {}, className: "", _t: "",
    appendChild(c) { this.children.push(c); return c; },
    addEventListener() {},
    set textContent(v) { this._t = String(v); texts.push(this._t); }, get textContent() { return this._t; } };
  return e;
}
const byId = { title: mk("h1"), desc: mk("p"), nav: mk("nav"), ops: mk("div"), filter: mk("input") };
global.document = { createElement: mk, getElementById: (id) => byId[id], querySelectorAll: () => [] };
global.fetch = () => Promise.resolve({ json: () => Promise.resolve(doc) });
eval(script);
setTimeout(() => {
  if (byId.desc.textContent.startsWith("Could not")) { console.error("render failed:", byId.desc.textContent); process.exit(1); }
  console.log("ops:", byId.ops.children.length, "elements:", count);
  const all = texts.join("\n");
  if (!all.includes("/v1/keys/{id}/rotate") || !all.includes("permission: keys:write")) { console.error("missing content"); process.exit(1); }
  if (!all.includes("consumer_id (required)")) { console.error("request schema not rendered"); process.exit(1); }
}, 50);
