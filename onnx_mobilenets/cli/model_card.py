"""The model card (``README.md``) of a published variant: YAML front matter in the Hugging Face Hub's
conventions (written by huggingface_hub's own `ModelCardData`, so the Hub and `ModelCard` read it
back), then what the model is, where its weights come from, how it was checked, and how to run it."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCardData

PAPERS = {
    "v1": "Andrew G. Howard et al. MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
          "Applications. arXiv:1704.04861, 2017. https://arxiv.org/abs/1704.04861",
    "v2": "Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh Chen. MobileNetV2: Inverted "
          "Residuals and Linear Bottlenecks. CVPR 2018. https://arxiv.org/abs/1801.04381",
    "uint8": "Benoit Jacob et al. Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only "
             "Inference. CVPR 2018. https://arxiv.org/abs/1712.05877",
}
DATASET = {"dataset_type": "imagenet-1k", "dataset_name": "ImageNet-1k", "dataset_split": "validation"}


def model_card(variant, records: list, evaluations: list, address: str) -> str:
    """The card of catalogue `variant` published with the artifacts whose records are `records`;
    `evaluations`: `evaluate --json` reports of it; `address`: its hf:// address, for the examples."""
    data = ModelCardData(
        license="apache-2.0", library_name="onnx", datasets=["imagenet-1k"], pipeline_tag="image-classification",
        tags=["onnx", "mobilenet", f"mobilenet-{variant.family}", "image-classification", "imagenet", "onnx-mobilenets"]
        + (["quantized", "int8"] if variant.quantized else []),
        model_name=variant.name, eval_results=_eval_results(variant, evaluations) or None,
    )
    return f"---\n{data.to_yaml()}\n---\n\n" + _body(variant, records, evaluations, address)


def _eval_results(variant, evaluations: list) -> list:
    results = []
    if variant.top1 is not None:
        source_name, source_url = variant.accuracy_source
        for metric, value in (("top-1", variant.top1), ("top-5", variant.top5)):
            results.append(EvalResult(task_type="image-classification", metric_type="accuracy", metric_value=value,
                                      metric_name=f"{metric} accuracy (published)", source_name=source_name,
                                      source_url=source_url, **DATASET))
    for report in evaluations:
        for metric in ("top1", "top5"):
            results.append(EvalResult(
                task_type="image-classification", metric_type="accuracy", metric_value=round(100 * report[metric], 2),
                metric_name=f"top-{metric[-1]} accuracy (measured on {report['images']} images, "
                            f"{report['preprocessing']} preprocessing, onnx-mobilenets evaluate)",
                verified=False, **DATASET))
    return results


def _body(variant, records: list, evaluations: list, address: str) -> str:
    first = records[0]
    weights = first.weights
    kind = "quantization-aware-trained uint8 " if variant.quantized else ""
    files = "\n".join(f"| `{r.spec.file_name}` | {_describe(r)} | {_parity(r)} |" for r in records)
    image_in = next((r for r in records if r.preprocessing.image_input), None)
    tensor = next((r for r in records if not r.preprocessing.image_input), first)
    published = (f"Published ImageNet accuracy: top-1 {variant.top1} %, top-5 {variant.top5} % "
                 f"([{variant.accuracy_source[0]}]({variant.accuracy_source[1]}))." if variant.top1 is not None
                 else "Google publishes no accuracy for this model.")
    measured = "".join(f"\nMeasured with `onnx-mobilenets evaluate` on {e['images']} images, {e['preprocessing']} "
                       f"preprocessing: top-1 {100 * e['top1']:.2f} %, top-5 {100 * e['top5']:.2f} %."
                       for e in evaluations)
    made_with = ", ".join(f"{k} {v}" for k, v in first.versions.items() if k != "onnx_mobilenets")
    provenance = [f"- source: {weights.source}" if weights.source else "- source: untrained random weights"]
    provenance += [f"- {key}: `{value}`" for key, value in (("tarball SHA-256", weights.sha256),
                                                              ("TFLite model", weights.tflite_member),
                                                              ("TFLite SHA-256", weights.tflite_sha256)) if value]
    papers = [PAPERS[variant.family]] + ([PAPERS["uint8"]] if variant.quantized else [])
    return "\n".join([
        f"# {variant.name}", "",
        f"Google's {kind}MobileNet {variant.family.upper()} ImageNet classifier (width {variant.alpha}, "
        f"{variant.resolution}x{variant.resolution}, {variant.macs_millions} M multiply-adds, "
        f"{variant.params_millions:.2f} M parameters) as validated ONNX, made by "
        "[onnx-mobilenets](https://pypi.org/project/onnx-mobilenets/). Every file carries its labels, its "
        "preprocessing and its provenance in its metadata; `config.json` states each file's input and output.", "",
        published + measured, "",
        "| file | what it takes | parity at conversion |", "| --- | --- | --- |", files, "",
        *_preprocessing(records), "## Provenance", "", *provenance, "- converted by onnx-mobilenets "
        f"{first.versions.get('onnx_mobilenets', '?')} ({made_with})",
        "- `manifest.json`: the SHA-256 of every file here, checked by onnx-mobilenets before use", "",
        "## Use it", "", "Python (`pip install onnx-mobilenets`):", "", "```python",
        "from onnx_mobilenets import OnnxMobileNet", "",
        f'model = OnnxMobileNet("{address}")   # or OnnxMobileNet("{variant.name}")',
        'print(model.predict("elephant.jpg", top=5))', "```", "",
        *_javascript(image_in), *_any_engine(image_in, tensor), "",
        "## Cite", "", *[f"- {paper}" for paper in papers], "",
    ])


def _describe(record) -> str:
    contract = record.preprocessing
    if contract.image_input:
        return f"the decoded image (uint8 NHWC, any size); `{contract.name}` preprocessing inside"
    scale = "uint8 pixels" if contract.dtype == "uint8" else "float32 in [-1, 1]"
    return (f"{contract.layout} {scale}, {record.resolution}x{record.resolution}, after `{contract.name}` "
            f"preprocessing; {record.spec.output}")


def _parity(record) -> str:
    parity = record.parity
    if record.quantization is not None:
        return f"quantized logits {parity['stored']['identical']:.1%} identical to Google's TFLite on the golden inputs"
    logits = parity.get("image_input", parity)["logits"]
    return (f"logits within the float32 error bound of Keras' (largest difference {logits['max_abs_diff']:.1e}, "
            f"{logits['headroom']:.1f}x under the bound)")


PREPROCESSING = {
    "default": "a centred square crop of side `m - 2 (m // 16)` (`m` the shorter side), a bilinear resize (ONNX "
               "`Resize`, `half_pixel`, no antialias) to `R f` with `f` the largest power of two up to 64 that fits, "
               "and the mean of each `f x f` block",
    "slim": "TF-slim's evaluation preprocessing exactly: `tf.image.central_crop(0.875)` on each axis, then TF1's "
            "`resize_bilinear` to `R x R`",
}


def _preprocessing(records: list) -> list:
    names = sorted({r.preprocessing.name for r in records})
    scaling = ("uint8 pixels rounded half to even" if records[0].preprocessing.dtype == "uint8"
               else "`x / 127.5 - 1`, float32")
    return ["## Preprocessing", "", *[f"- `{name}`: {PREPROCESSING[name]};" for name in names],
            f"- then {scaling}, RGB. The image-in files hold these steps as ONNX operations.", ""]


def _javascript(image_in) -> list:
    if image_in is None:
        return []
    return ["In the browser (onnxruntime-web; `onnx-mobilenets web` writes a whole page):", "", "```js",
            f'const session = await ort.InferenceSession.create("{image_in.spec.file_name}");',
            "const pixels = /* Uint8Array of the image's RGB bytes, height x width x 3 */;",
            "const input = new ort.Tensor(\"uint8\", pixels, [1, height, width, 3]);",
            "const outputs = await session.run({ [session.inputNames[0]]: input });",
            "const probabilities = outputs[session.outputNames[0]].data;   // 1000, in labels.txt order",
            "```", ""]


def _any_engine(image_in, tensor) -> list:
    if image_in is not None:
        return [f"Any ONNX engine (C++, C#, Java, OpenVINO, ...): feed `{image_in.spec.file_name}` the decoded RGB "
                "image as uint8 `[1, height, width, 3]`; it answers 1000 probabilities in `labels.txt` order."]
    contract = tensor.preprocessing
    return [f"Any ONNX engine: feed `{tensor.spec.file_name}` `[batch, {tensor.resolution}, {tensor.resolution}, 3]` "
            f"{contract.dtype} prepared as `config.json` states (`{contract.name}` preprocessing); it answers "
            f"1000 {tensor.spec.output} in `labels.txt` order."]
