"""Clean-up passes over the ONNX graphs that tf2onnx produces, for float and quantized artifacts.

Both: the input is named ``images`` and the batch is a named symbolic dimension (`name_inputs`);
the no-op Reshape after the global pool goes (tf2onnx keeps Keras' and TFLite's, which lose the
symbolic batch); initializers nothing uses and opset imports of other domains go.

Float graphs (`simplify`): tf2onnx folds most BatchNorms into the preceding Conv, but leaves the
scale of those after a depthwise conv as a separate Mul, and at opset 18 it writes the global pool
as ReduceMean. These passes fold per-channel Mul/Add constants into the Conv weights and bias, turn
the spatial mean into GlobalAveragePool, and run the 1x1 logits conv as a Gemm.

Each pass is exact; the parity gates check the result anyway.
"""

from __future__ import annotations

import numpy as np

INPUT_NAME = "images"
BATCH_DIM = "batch"


def simplify(proto) -> None:
    """Apply every float pass in place, then drop initializers nothing uses any more."""
    _fold_affine_into_conv(proto)
    _spatial_mean_to_global_pool(proto)
    drop_noop_reshapes(proto)
    _logits_conv_to_gemm(proto)
    drop_unused_initializers(proto)


def name_inputs(proto) -> None:
    """Input ``images``, a symbolic ``batch`` in the input and outputs, no stale intermediate shapes
    (tf2onnx names the batch unk__N in them; the gates infer them again), only the default opset
    domain imported."""
    graph = proto.graph
    source = graph.input[0]
    replace_uses(graph, source.name, INPUT_NAME)
    source.name = INPUT_NAME
    fix_batch(proto, None)
    del graph.value_info[:]
    imports = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    del proto.opset_import[:]
    proto.opset_import.extend(imports)


def fix_batch(proto, batch) -> None:
    """The batch dimension of the graph's inputs and outputs: the fixed size `batch`, or None for
    the symbolic ``batch``."""
    graph = proto.graph
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        if batch:
            dim.dim_value = batch
        else:
            dim.dim_param = BATCH_DIM


def _consumers(graph) -> dict:
    users = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _initializers(graph) -> dict:
    return {init.name: init for init in graph.initializer}


def replace_uses(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]


def _per_channel(value: np.ndarray, channels: int):
    """`value` as a (channels,) vector if it broadcasts per output channel of an NCHW Conv, else None."""
    if value.size == 1:
        return np.full(channels, value.reshape(()), dtype=np.float32)
    squeezed = value.reshape(-1)
    # (channels,) alone would broadcast along W, not along channels: not per-channel.
    expected = {(channels, 1, 1), (1, channels, 1, 1)}
    return squeezed.astype(np.float32) if value.shape in expected else None


def _fold_affine_into_conv(proto) -> None:
    """Conv -> Mul(c) -> Add(c) with per-channel constants becomes one Conv with scaled weights and bias."""
    from onnx import numpy_helper

    graph = proto.graph
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        users = _consumers(graph)
        inits = _initializers(graph)
        for conv in graph.node:
            if conv.op_type != "Conv" or conv.output[0] in outputs or conv.input[1] not in inits:
                continue
            follow = users.get(conv.output[0], [])
            if len(follow) != 1 or follow[0].op_type not in ("Mul", "Add"):
                continue
            op = follow[0]
            other = op.input[1] if op.input[0] == conv.output[0] else op.input[0]
            if other not in inits or op.output[0] in outputs:
                continue
            weight = numpy_helper.to_array(inits[conv.input[1]])
            channels = weight.shape[0]
            vector = _per_channel(numpy_helper.to_array(inits[other]), channels)
            if vector is None:
                continue
            bias = (
                numpy_helper.to_array(inits[conv.input[2]]) if len(conv.input) > 2 else np.zeros(channels, np.float32)
            )
            if op.op_type == "Mul":
                weight = weight * vector.reshape(-1, *([1] * (weight.ndim - 1)))
                bias = bias * vector
            else:
                bias = bias + vector
            # Named after the folded op's output, which is unique in the graph.
            w_name, b_name = f"{op.output[0]}/folded_W", f"{op.output[0]}/folded_B"
            graph.initializer.extend([
                numpy_helper.from_array(weight.astype(np.float32), w_name),
                numpy_helper.from_array(bias.astype(np.float32), b_name),
            ])
            conv.input[:] = [conv.input[0], w_name, b_name]
            # The Conv now produces what the Mul/Add produced.
            conv.output[0] = op.output[0]
            graph.node.remove(op)
            changed = True
            break


def _spatial_mean_to_global_pool(proto) -> None:
    """ReduceMean over H and W with keepdims (what tf2onnx emits at opset 18, where the axes became an
    input) is exactly GlobalAveragePool on NCHW, which every runtime handles as one fused op."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "axes" in attrs:
            axes = list(attrs["axes"])
        elif len(node.input) > 1 and node.input[1] in inits:
            axes = numpy_helper.to_array(inits[node.input[1]]).tolist()
        else:
            continue
        if sorted(axes) != [2, 3] or attrs.get("keepdims", 1) != 1:
            continue
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        graph.node.remove(node)
        graph.node.insert(index, pool)


def drop_noop_reshapes(proto) -> None:
    """Reshapes to [N, C, 1, 1] of what a global pool already made [N, C, 1, 1] (tf2onnx writes one
    with a fixed or -1 batch, which would lose the symbolic one)."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        if node.op_type != "Reshape" or node.input[1] not in inits or node.output[0] in outputs:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if len(shape) == 4 and shape[2:] == [1, 1] and _pooled(graph, node.input[0]):
            replace_uses(graph, node.output[0], node.input[0])
            graph.node.remove(node)


def _pooled(graph, name: str) -> bool:
    """Whether tensor `name` is a global pool's output, possibly (re)quantized on the way."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        node = producers.get(node.input[0])
    return node is not None and node.op_type in ("GlobalAveragePool", "AveragePool")


def _logits_conv_to_gemm(proto) -> None:
    """GlobalAveragePool -> 1x1 Conv -> Squeeze becomes GlobalAveragePool -> Squeeze -> Gemm.

    On a 1x1 map the logits conv is a matrix product, but onnxruntime runs it as a convolution per
    image (in its blocked NCHWc layout), which is slow at large batch: for V2 0.35/96 at batch 32
    the head is 12 % of the FLOPs and made the whole network 17 % slower than the same weights
    exported through a Dense layer. Gemm runs the whole batch as one matrix product.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    users = _consumers(graph)
    producers = {out: node for node in graph.node for out in node.output}
    for conv in list(graph.node):
        if conv.op_type != "Conv" or conv.input[1] not in inits:
            continue
        source = producers.get(conv.input[0])
        follow = users.get(conv.output[0], [])
        weight = numpy_helper.to_array(inits[conv.input[1]])
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if source is None or source.op_type != "GlobalAveragePool" or len(users.get(source.output[0], [])) != 1 \
                or len(follow) != 1 or follow[0].op_type != "Squeeze" or weight.shape[2:] != (1, 1) \
                or attrs.get("group", 1) != 1:
            continue
        squeeze = follow[0]
        classes = weight.shape[0]
        w_name, b_name = f"{conv.name}/gemm_W", f"{conv.name}/gemm_B"
        bias = numpy_helper.to_array(inits[conv.input[2]]) if len(conv.input) > 2 else np.zeros(classes, np.float32)
        graph.initializer.extend([numpy_helper.from_array(weight.reshape(classes, -1), w_name),
                                  numpy_helper.from_array(bias.astype(np.float32), b_name)])
        pooled = f"{conv.name}/pooled"
        squeeze.input[0] = source.output[0]
        logits = squeeze.output[0]
        squeeze.output[0] = pooled
        gemm = helper.make_node("Gemm", [pooled, w_name, b_name], [logits], name=f"{conv.name}/gemm", transB=1)
        index = list(graph.node).index(squeeze)
        graph.node.insert(index + 1, gemm)
        graph.node.remove(conv)
        return


def drop_unused_initializers(proto) -> None:
    graph = proto.graph
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
