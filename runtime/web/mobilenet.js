// onnx-mobilenets in the browser: an image-in artifact (the preprocessing inside the model) in
// onnxruntime-web, from an image element, bitmap, canvas or ImageData to labelled predictions.
//
//   import { load } from "./mobilenet.js";
//   const model = await load("models/mobilenet_v2_1.0_224-image.onnx");
//   const predictions = await model.classify(document.querySelector("img"), { top: 5 });
//   // [{ classIndex: 386, synset: "n02504458", label: "African elephant", probability: 0.61 }, ...]
//
// onnxruntime-web must be loaded first (a <script> defining `ort`), or passed: load(url, { ort }).
// `backend`: "auto" (the default) runs on WebGPU when the browser has a hardware GPU adapter and the
// loaded build of onnxruntime-web has WebGPU (ort.webgpu.min.js), and on WebAssembly otherwise or when
// WebGPU fails; `model.backend` says which it got and `model.fallbackReason` why not WebGPU.
// "webgpu" or "wasm" ask for one (an error if WebGPU fails).
// The labels come from the file `onnx-mobilenets web` writes beside the model (NAME.labels.json: the
// artifact's own metadata), or from `labelsUrl`.

// Pillow's limit on decoded pixels (PIL.Image.MAX_IMAGE_PIXELS), which the Python runtime keeps too.
export const MAX_PIXELS = 89478485;

export const BACKENDS = ["auto", "webgpu", "wasm"];

export async function load(modelUrl, options = {}) {
  const ort = options.ort || globalThis.ort;
  if (!ort) {
    throw new Error("onnxruntime-web is not loaded: include ort.wasm.min.js (or ort.webgpu.min.js) before load()");
  }
  const asked = options.backend || "auto";
  if (!BACKENDS.includes(asked)) {
    throw new Error(`backend must be one of ${BACKENDS.join(", ")}, got ${asked}`);
  }
  const labelsUrl = options.labelsUrl || modelUrl.replace(/\.onnx$/, ".labels.json");
  // Both downloads run at once; a failure is reported model first, so the message does not depend
  // on which request the network happened to finish first.
  const settled = await Promise.allSettled([fetchBytes(modelUrl), fetchJson(labelsUrl)]);
  const failed = settled.find((result) => result.status === "rejected");
  if (failed) {
    throw failed.reason;
  }
  const [bytes, record] = settled.map((result) => result.value);
  if (!Array.isArray(record.labels) || record.labels.length !== 1000) {
    throw new Error(`${labelsUrl} does not hold the 1000 ImageNet labels`);
  }
  const create = (provider) => ort.InferenceSession.create(bytes, {
    executionProviders: [provider],
    graphOptimizationLevel: "all",
  });
  let backend = asked === "wasm" ? "wasm" : "webgpu";
  let fallbackReason = asked === "auto" ? await webgpuProblem() : "";
  if (fallbackReason) {
    backend = "wasm";
  }
  let session;
  if (backend === "webgpu") {
    try {
      session = await create("webgpu");
    } catch (error) {
      if (asked === "webgpu") {
        throw new Error(`WebGPU failed: ${error.message}`);
      }
      backend = "wasm";
      fallbackReason = `WebGPU failed: ${error.message}`;
    }
  }
  session = session || await create("wasm");
  if (session.inputNames.length !== 1 || session.outputNames.length !== 1) {
    throw new Error(`${modelUrl} is not an image-in MobileNet artifact (one input, one output)`);
  }
  return Object.assign(new MobileNet(ort, session, record), { backend, fallbackReason });
}

// Why this browser should not run the model on WebGPU ("" when it should): no WebGPU, no adapter, only
// a software adapter (SwiftShader, which emulates a GPU on the CPU and is many times slower than
// WebAssembly), or an adapter that cannot make a device (a broken driver; onnxruntime-web's own
// WebGPU start-up is not trusted to fail cleanly there). Asked once per page.
export function webgpuProblem() {
  webgpuChecked = webgpuChecked || checkWebgpu();
  return webgpuChecked;
}

let webgpuChecked;

async function checkWebgpu() {
  if (typeof navigator === "undefined" || !navigator.gpu) {
    return "this browser has no WebGPU";
  }
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (error) {
    return `no WebGPU adapter (${error.message})`;
  }
  if (!adapter) {
    return "no WebGPU adapter";
  }
  const info = adapter.info || {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ");
  // (isFallbackAdapter moved from the adapter to its info in 2025; browsers have either)
  if (adapter.isFallbackAdapter || info.isFallbackAdapter || /swiftshader/i.test(name)) {
    return `the only WebGPU adapter is a software one (${name || "a fallback adapter"})`;
  }
  try {
    (await adapter.requestDevice()).destroy();
  } catch (error) {
    return `the WebGPU adapter (${name || "unnamed"}) cannot make a device: ${error.message}`;
  }
  return "";
}

export class MobileNet {
  constructor(ort, session, record) {
    this.ort = ort;
    this.session = session;
    this.labels = record.labels; // [[synset, label], ...] for class indices 0..999
    this.variant = record.variant;
    this.preprocessing = record.preprocessing;
  }

  // The `top` most probable classes of one image, most probable first.
  async classify(image, { top = 5 } = {}) {
    if (!Number.isInteger(top) || top < 1 || top > 1000) {
      throw new Error(`top must be an integer from 1 to 1000, got ${top}`);
    }
    const probabilities = await this.probabilities(image);
    const order = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a] || a - b);
    return order.slice(0, top).map((i) => ({
      classIndex: i,
      synset: this.labels[i][0],
      label: this.labels[i][1],
      probability: probabilities[i],
    }));
  }

  // The 1000 probabilities (a Float32Array) the model gives one image.
  async probabilities(image) {
    const { data, width, height } = rgbPixels(image);
    const input = new this.ort.Tensor("uint8", data, [1, height, width, 3]);
    const outputs = await this.session.run({ [this.session.inputNames[0]]: input });
    return outputs[this.session.outputNames[0]].data;
  }
}

// An image's pixels as RGB bytes, row by row. Transparent pixels are put over white, as the Python
// runtime does; browsers apply a JPEG's EXIF orientation when they decode it, as Pillow's
// exif_transpose does.
export function rgbPixels(image) {
  if (typeof ImageData !== "undefined" && image instanceof ImageData) {
    return fromRgba(image.data, image.width, image.height);
  }
  const width = image.naturalWidth || image.videoWidth || image.width;
  const height = image.naturalHeight || image.videoHeight || image.height;
  if (!width || !height) {
    throw new Error("the image has no pixels (not loaded, or not an image)");
  }
  checkSize(width, height);
  const canvas = typeof OffscreenCanvas !== "undefined"
    ? new OffscreenCanvas(width, height)
    : Object.assign(document.createElement("canvas"), { width, height });
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, width, height);
  context.drawImage(image, 0, 0, width, height);
  const { data } = context.getImageData(0, 0, width, height);
  return fromRgba(data, width, height);
}

function fromRgba(rgba, width, height) {
  checkSize(width, height);
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const alpha = rgba[i + 3];
    for (let c = 0; c < 3; c++) {
      // over white, rounded: what Pillow's alpha_composite onto white gives an opaque image exactly
      rgb[j + c] = alpha === 255 ? rgba[i + c] : Math.round((rgba[i + c] * alpha + 255 * (255 - alpha)) / 255);
    }
  }
  return { data: rgb, width, height };
}

function checkSize(width, height) {
  if (width * height > MAX_PIXELS) {
    throw new Error(`the image has ${width}x${height} pixels, more than ${MAX_PIXELS}: too large to classify`);
  }
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`cannot load ${url}: HTTP ${response.status}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`cannot load ${url}: HTTP ${response.status}`);
  }
  return response.json();
}
